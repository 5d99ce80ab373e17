"""``rdd-edge import``: a checkpoint of the paper's released code as a run folder every later stage accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rdd_edge.cli.app import app
from rdd_edge.cli.commands.options import DEFAULT_RUNS, Data, Dataset, Name, Runs
from rdd_edge.errors import ConfigError
from rdd_edge.sources import table_text

# lazy imports: the distill stage (torch) and rdd_edge.data (numpy, OpenCV) are imported inside the command:
# `rdd-edge --help` stays fast and torch-free


@app.command("import", epilog="\b\n" + table_text())  # \b: click keeps the table's lines as they are
def import_cmd(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A state dict saved by the released code (e.g. deeplabv3_resnet101_citys_best_model.pth).")],
    model: Annotated[str, typer.Option("--model", help="The released network it holds: r101, r18, mbv2 or psp18.")],
    dataset: Dataset = None, data: Data = None, name: Name = None, runs: Runs = DEFAULT_RUNS,
    head_channels: Annotated[Optional[int], typer.Option(
        "--head-channels", help="Head width of the file's network when it is not the paper's: 512 for a CIRKDv2 "
                                "checkpoint (CIRKD since commit dab64db).")] = None,
) -> None:
    """Import a checkpoint saved by the paper's released code (github.com/sunyueue/RDD, CIRKD) as a run folder.

    The imported network's logits equal the released network's; the run folder works with distill --teacher,
    eval, difficulty and export. --dataset (or the layout of --data) says what it was trained on: its class count.
    The last line names the run folder.
    """
    from rdd_edge.distill.importer import ImportSpec, import_released

    if dataset is None and data is not None:
        from rdd_edge.data.registry import detect_dataset

        dataset = detect_dataset(data)
    if dataset is None:
        raise ConfigError("import: pass --dataset NAME (the data set the checkpoint was trained on, e.g. cityscapes: "
                          "it sets the class count) or --data PATH to detect it from the folder's layout")

    r = import_released(ImportSpec(checkpoint, model, dataset, data, name, runs, head_channels=head_channels))
    typer.echo(f"imported {r.model_name} from {checkpoint}: {r.tensors} tensors in the released key layout, "
               f"{r.num_classes} classes ({dataset}), aux head: {'yes' if r.aux else 'no'}"
               + (f", head {head_channels} wide ({r.params / 1e6:.2f} M parameters; not the paper's network)"
                  if head_channels else ""))
    typer.echo(f"input: {r.normalization.describe()} (recorded: eval, export, check and demo apply it)")
    typer.echo(f"run folder: {r.run_dir}")
