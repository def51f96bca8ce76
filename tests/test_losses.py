"""Built-in losses against numpy: smoothing, soft labels, auxiliary logits, both modes, inside a train step."""
from __future__ import annotations

import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import mindplug
from mindplug import ConfigError

RS = np.random.RandomState(3)
N, C = 6, 5
MAIN = RS.randn(N, C).astype(np.float32)
AUX = [RS.randn(N, C).astype(np.float32) for _ in range(2)]
HARD = RS.randint(0, C, size=N).astype(np.int32)
SOFT = RS.dirichlet(np.ones(C), size=N).astype(np.float32)   # mixup-like soft labels, rows sum to 1


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _targets(labels):
    return np.eye(C)[labels] if labels.ndim == 1 else labels.astype(np.float64)


def ce_ref(logits, labels, eps, reduction="mean"):
    t = _targets(labels) * (1 - eps) + eps / C
    per_sample = -(t * _log_softmax(logits.astype(np.float64))).sum(axis=1)
    return {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]


def bce_ref(logits, labels, eps, reduction="mean"):
    t = _targets(labels) * (1 - eps) + eps / 2
    x = logits.astype(np.float64)
    per_element = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    return {"mean": per_element.mean(), "sum": per_element.sum(), "none": per_element}[reduction]


REFS = {"CE": ce_ref, "BCE": bce_ref}


@pytest.mark.parametrize("labels", [HARD, SOFT], ids=["hard", "soft"])
@pytest.mark.parametrize("name", ["CE", "BCE"])
def test_loss_with_smoothing_and_aux_matches_numpy(name, labels, mode):
    loss = mindplug.build({"type": name, "label_smoothing": 0.1, "aux_factor": 0.3}, kind="loss")
    assert isinstance(loss, nn.Cell)
    ref = REFS[name]
    got = loss(Tensor(MAIN), Tensor(labels))
    np.testing.assert_allclose(got.asnumpy(), ref(MAIN, labels, 0.1), rtol=1e-5)
    got_aux = loss((Tensor(MAIN), Tensor(AUX[0]), Tensor(AUX[1])), Tensor(labels))
    expected = ref(MAIN, labels, 0.1) + 0.3 * (ref(AUX[0], labels, 0.1) + ref(AUX[1], labels, 0.1))
    np.testing.assert_allclose(got_aux.asnumpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("name", ["CE", "BCE"])
def test_reductions(name, reduction):
    loss = mindplug.create(name, kind="loss", label_smoothing=0.2, reduction=reduction)
    np.testing.assert_allclose(loss(Tensor(MAIN), Tensor(HARD)).asnumpy(),
                               REFS[name](MAIN, HARD, 0.2, reduction), rtol=1e-5)


def test_aux_logits_are_ignored_without_aux_factor():
    loss = mindplug.create("ce", kind="loss")
    np.testing.assert_allclose(loss((Tensor(MAIN), Tensor(AUX[0])), Tensor(HARD)).asnumpy(),
                               ce_ref(MAIN, HARD, 0.0), rtol=1e-5)


def test_int64_labels_work():
    loss = mindplug.create("CE", kind="loss")
    np.testing.assert_allclose(loss(Tensor(MAIN), Tensor(HARD.astype(np.int64))).asnumpy(),
                               ce_ref(MAIN, HARD, 0.0), rtol=1e-5)


class _TwoHeads(nn.Cell):
    """A model that returns (main, aux) logits, as GoogLeNet does with aux heads while training."""

    def __init__(self):
        super().__init__()
        self.main = nn.Dense(4, C)
        self.aux = nn.Dense(4, C)

    def construct(self, x):
        return self.main(x), self.aux(x)


@pytest.mark.parametrize("name", ["CE", "BCE"])
def test_inside_a_train_step_with_tuple_logits(name, mode):
    ms.set_seed(0)
    net = _TwoHeads()
    x = RS.randn(N, 4).astype(np.float32)
    main = x @ net.main.weight.asnumpy().T + net.main.bias.asnumpy()
    aux = x @ net.aux.weight.asnumpy().T + net.aux.bias.asnumpy()
    loss = mindplug.create(name.lower(), kind="loss", label_smoothing=0.1, aux_factor=0.4)
    opt = mindplug.create("sgd", kind="optimizer", params=net.trainable_params(), lr=0.1)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    before = net.aux.weight.asnumpy().copy()
    value = step(Tensor(x), Tensor(HARD))
    ref = REFS[name]
    np.testing.assert_allclose(value.asnumpy(), ref(main, HARD, 0.1) + 0.4 * ref(aux, HARD, 0.1), rtol=1e-5)
    assert not np.allclose(net.aux.weight.asnumpy(), before)  # the aux head is trained through aux_factor


def test_names_are_case_insensitive_and_aliases_share_the_target():
    for name in ("CE", "ce", "Ce", "cross_entropy"):
        assert type(mindplug.create(name, kind="loss")).__name__ == "CrossEntropySmooth"
    for name in ("BCE", "bce", "binary_cross_entropy"):
        assert type(mindplug.create(name, kind="loss")).__name__ == "BinaryCrossEntropySmooth"


@pytest.mark.parametrize("kwargs, message", [
    ({"label_smoothing": 1.5}, r"label_smoothing must be a number in \[0, 1\)"),
    ({"label_smoothing": "0.1"}, "label_smoothing must be a number"),
    ({"aux_factor": -0.3}, "aux_factor must be a number >= 0"),
    ({"reduction": "mena"}, "did you mean 'mean'"),
])
def test_bad_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mindplug.create("CE", kind="loss", **kwargs)


def test_unknown_argument_and_unknown_loss():
    with pytest.raises(mindplug.ComponentArgumentError, match="did you mean 'label_smoothing'"):
        mindplug.create("CE", kind="loss", smoothing=0.1)
    with pytest.raises(mindplug.UnknownComponentError, match="did you mean"):
        mindplug.create("BCEE", kind="loss")


def test_plugin_module_does_not_import_mindspore():
    code = ("import sys, mindplug.plugins.losses as p; assert len(p.mindplug_losses()) == 4; "
            "assert 'mindspore' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
