"""``rdd-edge models``: the registered networks with their size and cost next to the paper's."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from rdd_edge.cli.app import app
from rdd_edge.errors import ConfigError
from rdd_edge.sizes import parse_hw

# lazy imports: torch and the models are imported inside the command: `rdd-edge --help` stays fast and torch-free


@app.command("models")
def models_cmd(
    size: Annotated[
        str, typer.Option("--size", metavar="HxW", help="Input size HxW for the FLOP count.")
    ] = "1024x2048",
    classes: Annotated[int, typer.Option("--classes", min=1, help="Number of classes (19 = Cityscapes, as in the paper).")] = 19,
    filter: Annotated[str, typer.Option("--filter", help="Wildcard on model names or aliases, e.g. 'deeplab*'.")] = "*",
) -> None:
    """List the segmentation models: parameters, MACs and FLOPs at a size, and the paper's figures."""
    hw = parse_hw(size, "--size")
    import torch

    # submodules, not the package: works even where an old editable install maps `models` as a namespace
    from rdd_edge.models.flops import count_flops, count_params, count_release_macs
    from rdd_edge.models.registry import aliases_of, create_model, list_models, model_cfg

    names = list_models(filter)
    if not names:
        raise ConfigError(f"--filter '{filter}' matches no model; known: {', '.join(list_models())}")
    console = Console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title=f"rdd-edge models at {hw[0]}x{hw[1]}, {classes} classes",
                  caption="params count the ResNets' FCN aux head, as the paper does (export drops it: 'w/o aux'). "
                          "FLOPs = 2 x MACs (conv + matmul only). The paper's networks are its released architectures "
                          "(ResNet-v1s deep stem); paper: 19 classes, 1024x2048, its 'G' figures are MACs from the "
                          "release's counter, which sizes dilated convs without the dilation ('rel G': that counter).")
    for col in ("model", "alias", "params M", "w/o aux", "MACs G", "FLOPs G", "rel G", "paper M/G"):
        # names and backbones fold on a narrow terminal (a new network's backbone may be long); figures never do
        text = col in ("model", "alias")
        table.add_column(col, no_wrap=not text, overflow="fold" if text else "ellipsis", justify="left" if text else "right")
    for name in names:
        cfg = model_cfg(name)
        with torch.device("meta"):
            model = create_model(name, classes, aux=cfg["aux_head"])
            plain = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux_head."))
        flops, macs = count_flops(model, hw)
        deep = "-v1s" if cfg["backbone_args"].get("stem_type") == "deep" else ""  # timm's resnet18 with the deep stem
        arch = f"{cfg['backbone']}{deep} {cfg['head'].upper()}" + ("+aux" if cfg["aux_head"] else "")
        table.add_row(
            f"[bold]{name}[/]\n[dim]{arch}[/]", ", ".join(aliases_of(name)),
            f"{count_params(model) / 1e6:.2f}", f"{plain / 1e6:.2f}", f"{macs / 1e9:.1f}", f"{flops / 1e9:.1f}",
            f"{count_release_macs(model, hw) / 1e9:.1f}",
            f"{cfg['paper_params_m']:g}/{cfg['paper_gflops']:g}" if cfg.get("paper_params_m") else "-",
        )
    console.print(table)
