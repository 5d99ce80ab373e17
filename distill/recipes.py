"""Named training recipes: ``--recipe release`` sets, at once, every option the released scripts use.

Read from the released code (github.com/sunyueue/RDD: ``train_onlykd_two_stage_diff.py`` and
``train_scripts/exp_table_1/*.sh`` for distillation; github.com/winycg/CIRKD at commit 91735ef:
``train_baseline.py`` and ``train_scripts/train_baseline/citys/deeplabv3_res101.sh`` for the
teacher). Each value names where it comes from. A recipe sits under the command line: explicit
options and ``--set`` still win. The defaults (the paper's variant, docs/reproduction.md) do not change.

Per-process scaling: the release divides ``--batch-size`` 16 over its 4 GPUs (4 crops each) and
applies the OHEM floor ``min_kept`` 100000 per GPU; here ``rdd_min_kept`` is per process batch, so
it is scaled by the crops per process: 100000 * (batch / processes) / 4.
"""

from __future__ import annotations

from typing import Any

from rdd_edge.errors import ConfigError

RELEASE_GPU_BATCH = 4  # crops per GPU in the released runs (batch 16 over 4 GPUs)
RELEASE_MIN_KEPT = 100000  # OhemCrossEntropy2d(min_kept=100000), per GPU

# (config field, value, where the release sets it)
RELEASE: dict[str, tuple[tuple[str, Any, str], ...]] = {
    "teacher": (
        ("iters", 40000, "train_baseline.py --max-iterations 40000"),
        ("batch", 16, "train_baseline.py --batch-size 16 (global; 16 // GPUs per process)"),
        ("lr", 0.02, "train_baseline.py --lr 0.02"),
        ("momentum", 0.9, "train_baseline.py --momentum 0.9"),
        ("weight_decay", 1e-4, "train_baseline.py --weight-decay 1e-4"),
        ("poly_power", 0.9, "train_baseline.py adjust_lr power 0.9"),
        ("crop", (512, 1024), "train_baseline.py --crop-size 512 1024"),
        ("scale_min", 0.5, "dataset/cityscapes.py generate_scale_label: 0.5 + randint(0, 15) / 10"),
        ("scale_max", 2.0, "dataset/cityscapes.py generate_scale_label"),
        ("scale_step", 0.1, "dataset/cityscapes.py generate_scale_label"),
        ("aux", True, "train_baseline.py: aux on for every ResNet"),
        ("aux_weight", 0.4, "train_baseline.py --aux-weight 0.4"),
        ("val_every", 800, "train_baseline.py --val-per-iters 800 (the teacher script sets none)"),
        ("amp", False, "train_baseline.py: no autocast (float32)"),
        ("align_corners", True, "losses/loss.py SegCrossEntropyLoss: interpolate(align_corners=True)"),
        ("init", "release", "models/base_models/resnetv1b.py: He fan-out convs, BN 1/0, no zero-init (without ImageNet)"),
    ),
    "distill": (
        ("iters", 40000, "exp_table_1 scripts max_iterations=40000"),
        ("batch", 16, "exp_table_1 scripts batch_size=16 (global; 16 // 4 GPUs = 4 per GPU)"),
        ("lr", 0.02, "train_onlykd_two_stage_diff.py --lr 0.02"),
        ("momentum", 0.9, "train_onlykd_two_stage_diff.py --momentum 0.9"),
        ("weight_decay", 1e-4, "train_onlykd_two_stage_diff.py --weight-decay 1e-4"),
        ("poly_power", 0.9, "train_onlykd_two_stage_diff.py adjust_lr power 0.9"),
        ("crop", (512, 1024), "train_onlykd_two_stage_diff.py --crop-size 512 1024"),
        ("scale_min", 0.5, "dataset/cityscapes.py generate_scale_label: 0.5 + randint(0, 15) / 10"),
        ("scale_max", 2.0, "dataset/cityscapes.py generate_scale_label"),
        ("scale_step", 0.1, "dataset/cityscapes.py generate_scale_label"),
        ("val_every", 1600, "exp_table_1 scripts --val-per-iters 1600"),
        ("method", "kd", "train_onlykd_two_stage_diff.py CriterionKD"),
        ("kd_weight", 1.0, "train_onlykd_two_stage_diff.py --lambda-kd 1.0"),
        ("kd_options", {"T": 1.0}, "train_onlykd_two_stage_diff.py --kd-temperature 1.0"),
        ("rdd", True, "train_onlykd_two_stage_diff.py: VGD (TFE) then EDD (TSE) stages"),
        ("tfe_fraction", 0.1, "exp_table_1 scripts --warmup_iter 4000 of 40000"),
        ("rdd_mode", "xor", "train_onlykd_two_stage_diff.py --EDD_method XOR"),
        ("rdd_threshold", 0.7, "train_onlykd_two_stage_diff.py --ohem_thresh 0.7"),
        ("confidence", "gt", "OhemCrossEntropy2d: probability of the label's class"),
        ("rdd_min_kept", RELEASE_MIN_KEPT, "OhemCrossEntropy2d(min_kept=100000) per GPU of 4 crops (scaled per process)"),
        ("rdd_class_weights", "cityscapes", "OhemCrossEntropy2d(use_weight=True): Cityscapes class weights"),
        ("tfe_kl", "aux_main", "KLDivLoss(log_softmax(main), softmax(aux)) = KL(aux || main)"),
        ("tfe_average", "all", "torch.mean(task_loss * exp_variance_scale): every pixel, ignored ones included"),
        ("aux_weight", 0.4, "train_onlykd_two_stage_diff.py: 0.4 * aux task loss"),
        ("amp", True, "train_onlykd_two_stage_diff.py torch.cuda.amp.autocast() + GradScaler"),
        ("amp_dtype", "fp16", "torch.cuda.amp.autocast(): float16 on any GPU"),
        ("align_corners", True, "interpolate(..., align_corners=True) for logits and TFE weights"),
        ("init", "release", "models/base_models/{resnetv1b,mobilenetv2}.py init (only without ImageNet weights)"),
    ),
}
RECIPES = ("release",)


def recipe_values(name: str, mode: str, batch: int | None = None, processes: int = 1) -> dict[str, Any]:
    """The config values of recipe ``name`` for ``mode``, with the per-process scaling applied.

    ``batch`` is the global batch the run will use (None: the recipe's), ``processes`` the number
    of training processes (``WORLD_SIZE``)."""
    if name not in RECIPES:
        raise ConfigError(f"--recipe {name!r}: use one of {', '.join(RECIPES)}")
    values = {key: value for key, value, _ in RELEASE[mode]}
    if "rdd_min_kept" in values:
        per_process = (batch or values["batch"]) / max(1, int(processes))
        values["rdd_min_kept"] = int(round(RELEASE_MIN_KEPT * per_process / RELEASE_GPU_BATCH))
    return values


def recipe_sources(mode: str) -> dict[str, str]:
    """``{field: where the release sets it}`` for the printed list."""
    return {key: where for key, _, where in RELEASE[mode]}


def apply_recipe(values: dict[str, Any], name: str, mode: str, dataset: str, overrides: dict[str, Any],
                 processes: int = 1, defaults: dict[str, Any] | None = None) -> list[str]:
    """Put recipe ``name`` into ``values`` (the defaults and the data set's preset) under ``overrides``;
    returns the settings it changed, one ``field: old -> new (where)`` line each.

    The release's scripts are Cityscapes': on another data set its crop and Cityscapes class weights are
    left out (the data set's own crop stays; no class weights)."""
    rec = recipe_values(name, mode, overrides.get("batch"), processes)
    if dataset != "cityscapes":
        rec.pop("crop", None)
        rec.pop("rdd_class_weights", None)
    where = recipe_sources(mode)
    method = overrides.get("method")
    if mode == "distill" and method is not None and method != "kd":
        for key in ("method", "kd_weight", "kd_options"):  # the method's registered weights are CIRKD's scripts'
            rec.pop(key, None)
        if method == "none":  # the release's baseline, train_baselinev2.py: CE (+ 0.4 aux), no RDD
            rdd_keys = ("rdd", "tfe_fraction", "rdd_mode", "rdd_threshold", "confidence", "rdd_min_kept",
                        "rdd_class_weights", "tfe_kl", "tfe_average")
            for key in rdd_keys:
                rec.pop(key, None)
            rec["rdd"] = False
            where = {**where, "rdd": "train_baselinev2.py: plain CE, no RDD"}
        else:  # AT / CWD ... + RDD: train_other_kd_two_stage_diff.py, whose TFE loss is CE mean x mean weight
            rec["tfe_average"] = "batch"
            where = {**where, "tfe_average": "train_other_kd_two_stage_diff.py: losses/task.py CE returns its mean, "
                                             "torch.mean(CE * weights) = CE x mean weight"}
    changed = []
    for key, new in rec.items():
        if overrides.get(key) is not None:
            continue  # an explicit option wins
        old = values.get(key, (defaults or {}).get(key))
        if old != new:
            changed.append(f"{key}: {old!r} -> {new!r} ({where[key]})")
        values[key] = new
    return changed
