"""The streaming mIoU against an independent per-class computation."""

import numpy as np
import pytest

from rdd_edge.metrics import ConfusionMatrix


def reference_iou(labels, preds, n, ignore=255):
    """IoU per class from set counts, written independently of the confusion matrix."""
    ious = []
    for c in range(n):
        inter = union = 0
        for lab, pr in zip(labels, preds):
            valid = lab != ignore
            a = (lab == c) & valid
            b = (pr == c) & valid
            inter += np.logical_and(a, b).sum()
            union += np.logical_or(a, b).sum()
        ious.append(np.nan if union == 0 else inter / union)
    return np.array(ious)


def test_miou_matches_reference_on_random_batches_with_ignored_pixels():
    rng = np.random.default_rng(0)
    n = 6
    cm = ConfusionMatrix(n)
    labels, preds = [], []
    for _ in range(5):
        lab = rng.integers(0, n, size=(2, 17, 23)).astype(np.uint8)
        lab[rng.random(lab.shape) < 0.2] = 255
        pr = np.where(rng.random(lab.shape) < 0.6, lab, rng.integers(0, n, size=lab.shape)).astype(np.int64)
        pr[lab == 255] = rng.integers(0, n, size=(lab == 255).sum())
        cm.update(lab, pr)
        labels.append(lab)
        preds.append(pr)
    ref = reference_iou(labels, preds, n)
    m = cm.compute()
    np.testing.assert_allclose(m.iou, ref, rtol=1e-12)
    assert m.miou == pytest.approx(np.nanmean(ref))
    valid = np.concatenate([l.ravel() for l in labels]) != 255
    correct = (np.concatenate([l.ravel() for l in labels]) == np.concatenate([p.ravel() for p in preds]))[valid]
    assert m.pixel_acc == pytest.approx(correct.mean())


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(4)
    lab = np.array([[0, 0, 1, 1]])
    pr = np.array([[0, 1, 1, 1]])
    cm.update(lab, pr)
    m = cm.compute()
    assert np.isnan(m.iou[2]) and np.isnan(m.iou[3])
    assert m.iou[0] == pytest.approx(0.5) and m.iou[1] == pytest.approx(2 / 3)
    assert m.miou == pytest.approx((0.5 + 2 / 3) / 2)
    assert m.as_dict(["a", "b", "c", "d"])["iou"]["c"] is None


def test_merge_equals_single_stream():
    rng = np.random.default_rng(1)
    a, b, whole = ConfusionMatrix(3), ConfusionMatrix(3), ConfusionMatrix(3)
    for i in range(4):
        lab = rng.integers(0, 3, (8, 8))
        pr = rng.integers(0, 3, (8, 8))
        (a if i % 2 else b).update(lab, pr)
        whole.update(lab, pr)
    a.merge(b)
    np.testing.assert_array_equal(a.mat, whole.mat)


def test_bad_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="predictions"):
        cm.update(np.zeros((2, 2)), np.full((2, 2), 7))
