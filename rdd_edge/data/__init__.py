"""Data set readers (NumPy/OpenCV only): synthetic, camvid, cityscapes, voc, ade20k.

``get_dataset(name, root, split)`` returns a :class:`~rdd_edge.data.base.SegDataset`-like
object yielding ``(uint8 RGB HxWx3, uint8 HxW label with 255 = ignore)``;
``dataset_info(name)`` gives its classes, palette and default sizes without touching disk;
``open_split(DataSpec(...), split)`` is how every stage opens the images a run uses.
"""

from rdd_edge.data.base import IGNORE_INDEX, DatasetInfo, SegDataset, read_image, read_label  # noqa: F401
from rdd_edge.data.registry import DATASETS, dataset_info, get_dataset  # noqa: F401
from rdd_edge.data.spec import DataSpec, open_split, spec_of_checkpoint  # noqa: F401
