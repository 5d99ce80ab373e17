"""rdd-edge: distill, export and deploy small semantic-segmentation students.

The ``rdd_edge`` package is the torch-free core every stage shares (data readers, the
synthetic scene generator, the mIoU metric, palettes and overlays, run folders) plus the
command line. Importing it never imports torch.
"""

__version__ = "0.1.0"

from rdd_edge.errors import RddError  # noqa: E402,F401
