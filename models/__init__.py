"""Segmentation networks (torch): registry, DeepLabV3 / PSPNet models, checkpoints, FLOP counts.

    from rdd_edge.models import create_model
    model = create_model("r18", num_classes=19, aux=True)   # DeepLabV3-ResNet18 with FCN aux head
    out = model(x)                                         # {"out": (N, 19, H/8, W/8), "aux": ...}
"""

from rdd_edge.models import networks  # noqa: F401  (registers the models)
from rdd_edge.models.checkpoint import load_checkpoint, load_weights, model_from_checkpoint, save_checkpoint, trusted_checkpoints
from rdd_edge.models.flops import count_flops, count_params
from rdd_edge.models.registry import ALIASES, aliases_of, create_model, list_models, model_cfg, register_model, resolve_name

__all__ = [
    "ALIASES", "aliases_of", "count_flops", "count_params", "create_model", "list_models", "load_checkpoint",
    "load_weights", "model_cfg", "model_from_checkpoint", "register_model", "resolve_name", "save_checkpoint", "trusted_checkpoints",
]
