"""INT8 sensitivity and --int8-budget on a student: the report, the budgeted drop and the latency cost.

    python -m benchmarks.int8_budget RUN_OR_CKPT --out /tmp/int8b --budget 1.0 [--hostile] [--data DIR]
        [--size 360x480] [--calib 100] [--check-images 100] [--loo 6] [--compare-loo N]

Exports the checkpoint with ``--int8 --int8-budget`` (``export.pipeline.export_run``, what the CLI runs)
into ``OUT/export-<name>`` and prints the export's sensitivity table, timings and the latency
ratios. ``--hostile`` first applies the function-preserving change of issue 18 to the student's head
(:func:`hostile_head`) and checks that FP32 outputs are unchanged. ``--compare-loo N`` then measures
every layer leave-one-out on the first N check images (``--int8-report --int8-loo -1``) and prints how
well the cheap estimate ranks the layers against it (Spearman, top-k overlap).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence


def hostile_head(model: Any, factors: Sequence[float] = (64.0, 128.0), seed: int = 0) -> list[str]:
    """Make a DeepLabV3 student hostile to per-tensor INT8 without changing its FP32 function.

    Two BN -> ReLU -> conv pairs of the head (the context projection's BN -> the head's 3x3 conv, and
    the head's BN -> the classifier): half the channels (chosen by ``seed``) of each BN are scaled
    up by ``factors[k]`` (its weight and bias: ReLU(k*y) = k*ReLU(y) for k > 0) and the next conv's
    weights for those input channels scaled down by the same factor. FP32 outputs are unchanged up to
    rounding; a per-tensor activation range is then set by the big channels and the small ones round
    to a few levels. Returns the names of the torch modules of the two convs that read the changed
    activations (the hostile layers, in network order).
    """
    import torch

    head = model.head
    first_bn = head.aspp.project[0][1] if hasattr(head, "aspp") else None
    if first_bn is None:
        raise ValueError("hostile_head: only the DeepLabV3 head (ASPP projection -> 3x3 conv -> classifier) is supported")
    pairs = [(first_bn, head.conv[0]), (head.conv[1], head.classifier)]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (bn, conv), k in zip(pairs, factors):
            idx = torch.randperm(bn.num_features, generator=g)[: bn.num_features // 2]
            f = torch.ones(bn.num_features)
            f[idx] = float(k)
            bn.weight.mul_(f)
            bn.bias.mul_(f)
            conv.weight.div_(f.view(1, -1, 1, 1))
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(head.conv[0])], names[id(head.classifier)]]


def _hostile_checkpoint(src: Path, dst: Path, factors: Sequence[float], size: tuple[int, int]) -> dict:
    """``src`` with :func:`hostile_head` applied, saved as ``dst``; the FP32 change measured on random inputs."""
    import torch

    from rdd_edge.models import load_checkpoint, model_from_checkpoint, save_checkpoint

    model, ckpt = model_from_checkpoint(src, aux=False)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)["out"]
        layers = hostile_head(model, factors)
        after = model(x)["out"]
    full = load_checkpoint(src)
    keep = ("dataset", "config", "data", "normalization")  # what export reads; the input normalisation above all
    save_checkpoint(dst, model, **{k: full[k] for k in keep if full.get(k) is not None})
    return {"layers": layers, "factors": list(factors), "max_abs_logit_change": float((after - before).abs().max()),
            "label_agreement": float((after.argmax(1) == before.argmax(1)).float().mean())}


def _overlap(a: Sequence[int], b: Sequence[int], k: int) -> int:
    return len(set(a[:k]) & set(b[:k]))


def compare(plan: dict) -> dict:
    """How the estimate (and the plain local noise) ranks layers against leave-one-out measured for every layer."""
    from rdd_edge.export.int8_sensitivity import rank_by_noise, spearman

    out = {}
    for f, v in plan["flavours"].items():
        rows = v["sensitivity"]
        idx = [i for i, r in enumerate(rows) if r["loo"] is not None and r["estimate"] is not None]
        noise = [rows[i]["estimate"] for i in idx]
        agree = [rows[i]["loo"]["agreement_gain"] for i in idx]
        miou = [rows[i]["loo"]["miou_gain"] for i in idx]
        by_est = [idx[j] for j in rank_by_noise(noise)]
        by_agree = sorted(idx, key=lambda i: -rows[i]["loo"]["agreement_gain"])
        by_miou = sorted(idx, key=lambda i: -rows[i]["loo"]["miou_gain"])
        local = [rows[i]["local_noise"] or 0.0 for i in idx]
        out[f] = {"layers": len(idx), "estimator": v.get("estimator"),
                  "spearman_local_agreement": spearman(local, agree), "spearman_agreement": spearman(noise, agree), "spearman_miou": spearman(noise, miou),
                  **{f"top{k}_overlap_agreement": _overlap(by_est, by_agree, k) for k in (1, 3, 6)},
                  **{f"top{k}_overlap_miou": _overlap(by_est, by_miou, k) for k in (1, 3, 6)},
                  "top6_estimate": [plan["layers"][i]["name"] for i in by_est[:6]],
                  "top6_loo_agreement": [plan["layers"][i]["name"] for i in by_agree[:6]],
                  "top6_loo_miou": [plan["layers"][i]["name"] for i in by_miou[:6]]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from rdd_edge.export.int8_report import format_table
    from rdd_edge.export.pipeline import export_run, find_checkpoint

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="distill run folder or checkpoint")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default=None, help="name of the export folder (default: from the source)")
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--hostile", action="store_true", help="apply hostile_head to the student first")
    ap.add_argument("--factors", default="64,128")
    ap.add_argument("--size", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--check-images", type=int, default=100)
    ap.add_argument("--loo", type=int, default=None, help="--int8-loo")
    ap.add_argument("--compare-loo", type=int, default=0, metavar="N",
                    help="also measure every layer leave-one-out on N check images and compare with the estimate")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    a.out.mkdir(parents=True, exist_ok=True)
    ckpt = find_checkpoint(a.source)
    name = a.name or ckpt.parent.name + ("-hostile" if a.hostile else "")
    result: dict[str, Any] = {"source": str(ckpt), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if a.hostile:
        from rdd_edge.sizes import parse_hw

        size = parse_hw(a.size or "64x96", "--size") or (64, 96)
        dst = a.out / f"{name}.pt"
        result["hostile"] = _hostile_checkpoint(ckpt, dst, [float(f) for f in a.factors.split(",")], size)
        print("hostile head:", json.dumps(result["hostile"]))
        ckpt = dst
    common = dict(source=ckpt, size=a.size, data=a.data, int8=True, calib=a.calib, check_images=a.check_images, min_calib=8)
    t = time.perf_counter()
    man = export_run(out=a.out / f"export-{name}", int8_budget=a.budget, int8_loo=a.loo, **common)
    result["export_seconds"] = round(time.perf_counter() - t, 1)
    plan = man["int8_sensitivity"]
    print(format_table(plan))
    result["plan"] = {k: plan[k] for k in ("calibration", "budget", "max_float", "loo_layers", "fp32", "cpu", "seconds")}
    result["flavours"] = {f: {"full": v["full"], "final": v["final"], "steps": v["steps"], "seconds": v["seconds"]}
                          for f, v in plan["flavours"].items()}
    print(f"export with --int8-budget {a.budget:g}: {result['export_seconds']:.0f} s "
          f"(sensitivity estimate {plan['flavours']['int8-cpu']['seconds']['estimate']:.1f} s for both files)")
    if a.compare_loo:
        t = time.perf_counter()
        man2 = export_run(out=a.out / f"export-{name}-loo", int8_report=True, int8_loo=-1,
                          **{**common, "check_images": a.compare_loo})
        plan2 = man2["int8_sensitivity"]
        result["compare"] = {"check_images": a.compare_loo, "seconds": round(time.perf_counter() - t, 1),
                             "flavours": compare(plan2),
                             "leave_one_out_seconds": {f: v["seconds"] for f, v in plan2["flavours"].items()}}
        print(format_table(plan2))
        print(json.dumps(result["compare"], indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
