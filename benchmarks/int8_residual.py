"""The TensorRT file's Q/DQ placement before and after issue 28 (Q/DQ on the residual input of each Add,
then on the input of average pooling and of a Resize feeding a Concat: ``export.int8_placement``).

    python -m benchmarks.int8_residual --out /tmp/int8r [--students mbv2,r18] [--steps 150] [--size 96x144]

A second run with the same ``--out`` reuses each student's trained checkpoint (and the data).

Per student: a briefly trained network (random init as the release draws it, cross-entropy on the synthetic scenes, Adam;
a stand-in for a real run, so that its labels mean something), exported with ``export_run``
(``--int8``, the check images of the synthetic val split) twice: with the Conv-only placement
(``export.int8.RESIDUAL_QDQ = False``), with the residual Adds quantized, and with the pooling / Resize
inputs quantized too (``export.int8.FUSION_QDQ``). Printed per file: Q/DQ
node count, residual Adds whose both sides read INT8 (a DequantizeLinear of their own and a Conv with
quantized inputs) and those reading a DequantizeLinear shared with a Conv, size, mIoU drop and label agreement with FP32 on the check images (ONNX Runtime, this CPU),
as a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence


PLACEMENTS = (  # label, export.int8.RESIDUAL_QDQ, export.int8.FUSION_QDQ, folder tag
    ("before: Conv inputs", False, False, "before"),
    ("+ residual Add inputs", True, False, "residual"),
    ("+ pooling / Resize inputs (now)", True, True, "after"),
)


def _train(name: str, data: Path, size: tuple[int, int], steps: int, seed: int = 0) -> Any:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from rdd_edge.data.base import read_image, read_label
    from rdd_edge.models import create_model
    from rdd_edge.models.init import release_init
    from rdd_edge.normalize import IMAGENET

    torch.manual_seed(seed)
    files = sorted((data / "train" / "images").glob("*.png"))
    x = torch.from_numpy(IMAGENET.apply(np.stack([read_image(f) for f in files]).transpose(0, 3, 1, 2)))
    y = torch.from_numpy(np.stack([read_label(data / "train" / "labels" / f.name) for f in files]).astype(np.int64))
    model = create_model(name, num_classes=11, head_channels=32, pretrained=None)
    # the release's init (--set init=release): timm zero-initialises each ResNet block's last BN, and after a
    # short training some folded conv weights stay ~1e-8, whose scales underflow the FP16 TensorRT file
    release_init(model)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(files))[:8]
        out = F.interpolate(model(x[idx])["out"], size=size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(out, y[idx], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), float(loss.detach())


def _graph(path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path))
    consts = {t.name for t in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    adds = [n for n in m.graph.node if n.op_type == "Add" and not any(t in consts for t in n.input)]

    def int8_conv(t: str) -> bool:
        n = producer.get(t)
        return n is not None and n.op_type == "Conv" and all(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input[:2])

    readers: dict[str, int] = {}
    for n in m.graph.node:
        for t in n.input:
            readers[t] = readers.get(t, 0) + 1

    def own_dq(t: str) -> bool:  # a DequantizeLinear that only this Add reads (not the next Conv's, shared)
        return producer[t].op_type == "DequantizeLinear" and readers[t] == 1

    both = sum(1 for a in adds if sorted(producer[t].op_type for t in a.input) == ["Conv", "DequantizeLinear"]
               and any(int8_conv(t) for t in a.input) and any(own_dq(t) for t in a.input))
    shared = sum(1 for a in adds if any(producer[t].op_type == "DequantizeLinear" and readers[t] > 1 for t in a.input))
    ops = [n.op_type for n in m.graph.node]
    pools = [n for n in m.graph.node if n.op_type in ("ReduceMean", "AveragePool", "GlobalAveragePool")]
    return {"pools_int8_in": sum(1 for n in pools if producer[n.input[0]].op_type == "DequantizeLinear"),
            "pools": len(pools), "q": ops.count("QuantizeLinear"), "dq": ops.count("DequantizeLinear"), "residual_adds": len(adds),
            "adds_int8_both_sides": both, "adds_reading_a_shared_dq": shared}


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from rdd_edge.cpuinfo import detect
    from rdd_edge.data import dataset_info
    from rdd_edge.data.synthetic import write_synthetic
    from rdd_edge.export import int8 as int8_mod
    from rdd_edge.export.pipeline import export_run
    from rdd_edge.models import save_checkpoint
    from rdd_edge.normalize import IMAGENET
    from rdd_edge.sizes import parse_hw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--students", default="mbv2,r18")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--size", default="96x144")
    ap.add_argument("--scenes", type=int, default=120)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--check-images", type=int, default=24)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)  # two threads thrash on a shared 2-core box (RESULTS, issue 18)
    size = parse_hw(a.size, "--size")
    data = a.out / "data"
    if not data.is_dir():
        write_synthetic(data, n=a.scenes, size=size, val_fraction=0.25)
    rows = []
    for name in a.students.split(","):
        t = time.perf_counter()
        ckpt = a.out / f"runs/distill-{name}/best.pt"
        meta = ckpt.with_name("train.json")
        if ckpt.is_file() and meta.is_file():  # trained by an earlier run with this --out
            loss = json.loads(meta.read_text())["loss"]
        else:
            model, loss = _train(name, data, size, a.steps)
            save_checkpoint(ckpt, model, dataset=dataset_info("synthetic"), config={"dataset": "synthetic"},
                            normalization=IMAGENET.as_dict())
            meta.write_text(json.dumps({"loss": loss, "steps": a.steps}))
        train_s = time.perf_counter() - t
        for placement, res, fus, tag in PLACEMENTS:
            int8_mod.RESIDUAL_QDQ, int8_mod.FUSION_QDQ = res, fus
            out = a.out / f"export-{name}-{tag}"
            man = export_run(source=ckpt, out=out, size=a.size, data=str(data), int8=True, calib=a.calib, min_calib=8,
                             check_images=a.check_images)
            art = man["artifacts"]["int8"]
            fp32 = man["artifacts"]["onnx"]
            rows.append({"student": name, "placement": placement, **_graph(out / art["file"]),
                         "mb": round((out / art["file"]).stat().st_size / 1e6, 3),
                         "fp32_miou": round(100 * fp32["miou"], 2), "miou": round(100 * art["miou"], 2),
                         "drop": round(100 * (fp32["miou"] - art["miou"]), 2),
                         "agree": round(100 * art["agreement"]["label_agreement"], 2),
                         "train_loss": round(loss, 3), "train_s": round(train_s, 1)})
            print(json.dumps(rows[-1]), flush=True)
    int8_mod.RESIDUAL_QDQ = int8_mod.FUSION_QDQ = True
    cpu = detect().as_dict()
    print(f"\nCPU: {cpu.get('model')}, {cpu.get('cores')} cores, {cpu.get('isa')}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| student | placement | Q | DQ | Adds: INT8 both sides / shared DQ / all | pools INT8 in / all | MB | FP32 mIoU | int8 mIoU | drop | agree % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['student']} | {r['placement']} | {r['q']} | {r['dq']} | {r['adds_int8_both_sides']} / "
              f"{r['adds_reading_a_shared_dq']} / {r['residual_adds']} | {r['pools_int8_in']} / {r['pools']} "
              f"| {r['mb']:.3f} | {r['fp32_miou']:.2f} | {r['miou']:.2f} | {r['drop']:.2f} | {r['agree']:.2f} |")
    (a.out / "int8_residual.json").write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
