"""``rdd-edge data``: check a data set folder, write synthetic scenes, list the known formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from rdd_edge.cli.app import app
from rdd_edge.cli.commands.options import DatasetOfFolder
from rdd_edge.errors import DataError, RddError
from rdd_edge.runs import atomic_path, write_json
from rdd_edge.sizes import parse_hw

# lazy imports: rdd_edge.data and rdd_edge.viz (numpy, OpenCV) are imported inside the commands: `rdd-edge --help`
# stays fast

data_app = typer.Typer(
    help="Data sets: check a folder (counts, class histogram, every bad file), write synthetic scenes, list formats.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data", help="Check data set folders, write synthetic scenes, list the known formats.")


def _pct(n: int, total: int) -> str:
    """``16.85% (10.7M)``: share first, pixel count rounded, so three splits fit 80 columns."""
    return f"{100.0 * n / total:.2f}% ({_short(n)})" if total else "0"


def _short(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


@data_app.command("check")
def check_cmd(
    path: Annotated[Path, typer.Argument(help="Data set folder to check.")],
    format: DatasetOfFolder = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON here.")] = None,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="Write a PNG of the first pair: image, labels, overlay with legend.")] = None,
    max_problems: Annotated[int, typer.Option("--max-problems", min=1, help="Problems listed on screen (all go to --json).")] = 50,
) -> None:
    """Open every image and label of every split; print counts, class histogram and each problem. Exit 1 on problems."""
    from rdd_edge.data.check import check_dataset

    from rdd_edge.data.registry import detect_dataset

    console = Console()
    format = format or detect_dataset(path)
    report = check_dataset(path, format, progress=console.is_terminal)

    console.print(f"[bold]{report.format}[/bold] data set at {report.root}")
    counts = Table(title="pairs per split")
    counts.add_column("split")
    counts.add_column("pairs", justify="right")
    for split, n in report.counts.items():
        counts.add_row(split, str(n))
    console.print(counts)

    hist = Table(title="class pixels (clean pairs)")
    hist.add_column("id", justify="right")
    hist.add_column("class")
    splits = list(report.histogram)
    for s in splits:
        hist.add_column(s, justify="right")
    totals = {s: int(report.histogram[s].sum()) for s in splits}
    for i, name in enumerate([*report.classes, "ignore (255)"]):
        hist.add_row("255" if i == len(report.classes) else str(i), name, *(_pct(int(report.histogram[s][i]), totals[s]) for s in splits))
    console.print(hist)

    if json_out is not None:
        write_json(json_out, report.as_dict())
        console.print(f"report written to {json_out}")
    if preview is not None:
        _write_preview(preview, path, format)
        console.print(f"preview written to {preview}")

    if report.ok:
        console.print(f"[green]no problems[/green] in {sum(report.counts.values())} pairs")
        return
    probs = Table(title=f"{len(report.problems)} problem(s)")
    probs.add_column("kind", style="red", no_wrap=True)
    probs.add_column("split")
    probs.add_column("problem", overflow="fold")
    for p in report.problems[:max_problems]:
        probs.add_row(p.kind, p.split, p.message)
    console.print(probs)
    if len(report.problems) > max_problems:
        console.print(f"... and {len(report.problems) - max_problems} more (use --json to see them all)")
    by_kind = ", ".join(f"{k}: {len(v)}" for k, v in report.problems_by_kind().items())
    console.print(f"[red]{len(report.problems)} problem(s)[/red] ({by_kind})")
    raise typer.Exit(code=1)


def _write_preview(out: Path, root: Path, format: str) -> None:
    """Image | coloured labels | overlay with legend, for the first readable pair."""
    import cv2
    import numpy as np

    from rdd_edge.data.registry import get_format
    from rdd_edge.viz import colorize, draw_legend, overlay, side_by_side

    fmt = get_format(format)
    for split in fmt.find_splits(root):
        try:
            ds = fmt.open(root, split)
            image, label = ds[0]
        except DataError:
            continue
        pal, info = fmt.info.palette, fmt.info
        over = draw_legend(overlay(image, label, pal), info.classes, pal, present=np.unique(label))
        sheet = side_by_side([image, colorize(label, pal), over], [ds.name(0), "labels", "overlay"])
        with atomic_path(out, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        return
    raise DataError(f"{root}: no readable image/label pair for a preview")


@data_app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write (CamVid compact layout: <split>/images, <split>/labels).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of scenes in all splits.")] = 500,
    size: Annotated[Optional[str], typer.Option("--size", help="Scene size HxW, e.g. 360x480 (default: the generator's).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same scenes.")] = 0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of scenes in the val split.")] = 0.2,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the folder if it exists and is not empty.")] = False,
) -> None:
    """Write synthetic street scenes with labels (CamVid layout), readable as `--data OUT`."""
    hw = parse_hw(size, "--size")
    from rdd_edge.data import synthetic
    from rdd_edge.data.registry import get_format

    console = Console()
    with console.status(f"writing {n} synthetic scenes to {out} ..."):
        root = Path(synthetic.write_synthetic(out, n, size=hw, seed=seed, val_fraction=val_fraction, overwrite=overwrite))
    fmt = get_format("synthetic")
    console.print(f"wrote synthetic scenes to [bold]{root}[/bold]")
    table = Table(title="pairs per split")
    table.add_column("split")
    table.add_column("pairs", justify="right")
    for split in fmt.find_splits(root):
        table.add_row(split, str(len(fmt.scan(root, split).pairs)))
    console.print(table)
    console.print(f"train on it with: --data {root}   (check it: rdd-edge data check {root})")


@data_app.command("list")
def list_cmd() -> None:
    """The data set formats rdd-edge reads: classes, eval and crop sizes, on-disk layout."""
    from rdd_edge.data.registry import DATASETS, get_format

    table = Table(title="data set formats (--dataset / --format)")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("classes")
    table.add_column("eval HxW", no_wrap=True)
    table.add_column("crop HxW", no_wrap=True)
    table.add_column("layout", overflow="fold")
    for name in DATASETS:
        try:
            fmt = get_format(name)
            info = fmt.info
        except RddError:
            table.add_row(name, "-", "-", "-", "(the synthetic generator is not installed)")
            continue
        shown = ", ".join(info.classes[:3]) + (", ..." if info.num_classes > 3 else "")
        hw = ("x".join(map(str, info.eval_size)), "x".join(map(str, info.crop_size)))
        table.add_row(name, f"{info.num_classes} ({shown})", *hw, fmt.summary)
    Console().print(table)
