"""``rdd-edge models``: the registered networks with their size and cost next to the paper's."""

from __future__ import annotations

from typing import Annotated

import typer

from rdd_edge.app import app
from rdd_edge.errors import ConfigError


@app.command("models")
def models_cmd(
    size: Annotated[
        str, typer.Option("--size", metavar="HxW", help="Input size HxW for the FLOP count.")
    ] = "1024x2048",
    classes: Annotated[int, typer.Option("--classes", min=1, help="Number of classes (19 = Cityscapes, as in the paper).")] = 19,
    filter: Annotated[str, typer.Option("--filter", help="Wildcard on model names or aliases, e.g. 'deeplab*'.")] = "*",
) -> None:
    """List the segmentation models: parameters, MACs and FLOPs at a size, and the paper's figures."""
    from rdd_edge.sizes import parse_hw

    hw = parse_hw(size, "--size")
    import torch
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # submodules, not the package: works even where an old editable install maps `models` as a namespace
    from models.flops import count_flops, count_params
    from models.registry import aliases_of, create_model, list_models, model_cfg

    names = list_models(filter)
    if not names:
        raise ConfigError(f"--filter '{filter}' matches no model; known: {', '.join(list_models())}")
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 132))
    table = Table(box=box.SIMPLE_HEAD, title=f"rdd-edge models at {hw[0]}x{hw[1]}, {classes} classes",
                  caption="ResNet models are counted with their FCN aux head, as in the paper; export drops it.\n"
                          "FLOPs = 2 x MACs (conv + matmul only). Paper: CIRKD code base, 19 classes, 1024x2048; "
                          "its 'G' figures match MACs.")
    for col, kw in (("model", dict(no_wrap=True, style="bold")), ("alias", {}), ("backbone", {}), ("head", {}),
                    ("aux head", {}), ("params (M)", dict(justify="right")), ("no aux (M)", dict(justify="right")),
                    ("MACs (G)", dict(justify="right")), ("FLOPs (G)", dict(justify="right")),
                    ("paper params / G", dict(justify="right"))):
        table.add_column(col, **kw)
    for name in names:
        cfg = model_cfg(name)
        with torch.device("meta"):
            model = create_model(name, classes, aux=cfg["aux_head"])
            plain = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux_head."))
        flops, macs = count_flops(model, hw)
        table.add_row(
            name, ", ".join(aliases_of(name)), cfg["backbone"], cfg["head"].upper(), "FCN (c3)" if cfg["aux_head"] else "-",
            f"{count_params(model) / 1e6:.2f}", f"{plain / 1e6:.2f}", f"{macs / 1e9:.1f}", f"{flops / 1e9:.1f}",
            f"{cfg['paper_params_m']}M / {cfg['paper_gflops']}G",
        )
    console.print(table)
