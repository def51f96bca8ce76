"""val_tta: the evaluation step's horizontal-flip test-time augmentation against a numpy reference, and
a bad value refused (the key reaching ``validate`` is tested with the trained run in test_engine)."""
from __future__ import annotations

import numpy as np
import pytest

from test_engine import run


def _reference(weight, bias, images, labels, hflip):
    def logits(x):
        return x.reshape(len(x), -1) @ weight.T + bias

    out = logits(images)
    if hflip:
        out = (out + logits(images[..., ::-1])) / 2
    shifted = out - out.max(axis=1, keepdims=True)
    loss = -(shifted[np.arange(len(out)), labels] - np.log(np.exp(shifted).sum(axis=1))).sum()
    order = np.argsort(-out, axis=1)
    return (order[:, 0] == labels).sum(), (order[:, :3] == labels[:, None]).sum(), loss


@pytest.mark.parametrize("hflip", [False, True])
def test_eval_step_scores_the_mean_logits_of_each_image_and_its_mirror(hflip):
    import mindspore as ms
    from mindspore import nn

    from mindplug.engine.steps import EvalStep

    rng = np.random.default_rng(3)
    images = rng.standard_normal((16, 2, 3, 5)).astype(np.float32)
    labels = rng.integers(0, 6, size=16).astype(np.int32)
    weight = rng.standard_normal((6, 30)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)

    dense = nn.Dense(30, 6)
    dense.weight.set_data(ms.Tensor(weight))
    dense.bias.set_data(ms.Tensor(bias))
    net = nn.SequentialCell([nn.Flatten(), dense])
    top1, topk, loss = EvalStep(net, 3, hflip=hflip)(ms.Tensor(images), ms.Tensor(labels))
    want = _reference(weight, bias, images, labels, hflip)
    assert float(top1.asnumpy()) == want[0] and float(topk.asnumpy()) == want[1]
    assert float(loss.asnumpy()) == pytest.approx(want[2], rel=1e-5)
    other = _reference(weight, bias, images, labels, not hflip)
    assert other[2] != pytest.approx(want[2], rel=1e-3)  # the mirror changes this asymmetric net's scores


def test_an_unknown_val_tta_is_one_error_line(tmp_path):
    from test_engine import recipe

    cfg = recipe(str(tmp_path), "t", val_tta="vflip")
    proc = run(["mindplug", "validate", "-c", cfg, "--ckpt_path", "x.ckpt"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "val_tta" in errors[0] and "hflip" in errors[0], proc.stderr
