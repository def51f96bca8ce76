"""Built-in optimizers: created by name, one update checked against numpy, weight-decay groups, errors."""
from __future__ import annotations

import subprocess
import sys
from typing import Callable, Dict

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

import mindplug
from mindplug import ComponentArgumentError, ConfigError

RS = np.random.RandomState(7)
W0 = RS.randn(3, 4).astype(np.float32)
B0 = RS.randn(3).astype(np.float32)
GRADS = [(RS.randn(3, 4).astype(np.float32), RS.randn(3).astype(np.float32)) for _ in range(2)]
LRS = [0.1, 0.05]
WD = 0.01
B1, B2 = 0.9, 0.999


@pytest.fixture
def graph_mode():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


# ---- numpy references: one step of each optimizer on one tensor ------------------------------------
# ``s`` is that tensor's state, ``t`` the 1-based step, ``decay`` whether weight decay applies to it.

def _sgd(p, g, lr, t, s, decay):
    g = g + WD * p if decay else g
    s["buf"] = g if t == 1 else 0.9 * s["buf"] + g
    return p - lr * s["buf"]


def _momentum(p, g, lr, t, s, decay):
    g = g + WD * p if decay else g
    s["acc"] = 0.9 * s.get("acc", 0.0) + g
    return p - lr * (g + 0.9 * s["acc"])          # use_nesterov=True


def _adam_moments(g, s):
    s["m"] = B1 * s.get("m", 0.0) + (1 - B1) * g
    s["v"] = B2 * s.get("v", 0.0) + (1 - B2) * g * g
    return s["m"], s["v"]


def _adam(p, g, lr, t, s, decay):
    g = g + WD * p if decay else g
    m, v = _adam_moments(g, s)
    return p - lr * np.sqrt(1 - B2 ** t) / (1 - B1 ** t) * m / (np.sqrt(v) + 1e-8)


def _adamw(p, g, lr, t, s, decay):
    m, v = _adam_moments(g, s)
    p = p * (1 - lr * WD) if decay else p
    return p - lr * (m / (1 - B1 ** t)) / (np.sqrt(v / (1 - B2 ** t)) + 1e-8)


def _rmsprop(p, g, lr, t, s, decay):
    g = g + WD * p if decay else g
    s["ms"] = 0.9 * s.get("ms", 1.0) + 0.1 * g * g  # MindSpore starts the mean square at 1
    s["mom"] = 0.5 * s.get("mom", 0.0) + lr * g / np.sqrt(s["ms"] + 1e-10)
    return p - s["mom"]


def _adagrad(p, g, lr, t, s, decay):
    g = g + WD * p if decay else g
    s["acc"] = s.get("acc", 0.1) + g * g
    return p - lr * g / np.sqrt(s["acc"])


def _lion(p, g, lr, t, s, decay):
    m = s.get("m", 0.0)
    p = p - lr * (np.sign(0.9 * m + 0.1 * g) + (WD * p if decay else 0.0))
    s["m"] = 0.99 * m + 0.01 * g
    return p


def _lamb(p, g, lr, t, s, decay):
    m, v = _adam_moments(g, s)
    r = (m / (1 - B1 ** t)) / (np.sqrt(v / (1 - B2 ** t)) + 1e-6) + (WD * p if decay else 0.0)
    trust = np.linalg.norm(p) / np.linalg.norm(r)
    return p - lr * trust * r


REFERENCES: Dict[str, Callable] = {
    "sgd": _sgd, "momentum": _momentum, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop, "adagrad": _adagrad,
    "lion": _lion, "lamb": _lamb,
}
EXTRA_ARGS = {"sgd": {"momentum": 0.9}, "momentum": {"use_nesterov": True}, "rmsprop": {"momentum": 0.5}}


def test_every_builtin_optimizer_has_a_reference():
    assert set(mindplug.list("*", kind="optimizer")) >= set(REFERENCES)


@pytest.mark.parametrize("loss_scale", [1.0, 128.0])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_two_steps_match_numpy(name, loss_scale, mode):
    """Per-step lr, weight decay on the matrix only ('auto'), and loss scale that only unscales gradients."""
    w = Parameter(Tensor(W0), name="fc.weight")
    b = Parameter(Tensor(B0), name="fc.bias")
    opt = mindplug.create(name, kind="optimizer", params=[w, b], lr=LRS, weight_decay=WD,
                          weight_decay_filter="auto", loss_scale=loss_scale, **EXTRA_ARGS.get(name, {}))
    assert isinstance(opt, nn.Optimizer)
    expected = [W0.astype(np.float64), B0.astype(np.float64)]
    states: list = [{}, {}]
    for t, (grads, lr) in enumerate(zip(GRADS, LRS), start=1):
        opt(tuple(Tensor(g * np.float32(loss_scale)) for g in grads))
        expected = [REFERENCES[name](p, g.astype(np.float64), lr, t, s, decay)
                    for p, g, s, decay in zip(expected, grads, states, (True, False))]
    np.testing.assert_allclose(w.asnumpy(), expected[0], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(b.asnumpy(), expected[1], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_step_on_dense_net_in_train_one_step_cell(name, graph_mode):
    """The path training takes: a config dict, TrainOneStepCell in GRAPH mode, MSE loss, numpy gradient."""
    net = nn.Dense(4, 3)
    net.weight.set_data(Tensor(W0))
    net.bias.set_data(Tensor(B0))
    cfg = {"type": name, "weight_decay": WD, "weight_decay_filter": "auto", **EXTRA_ARGS.get(name, {})}
    opt = mindplug.build(cfg, kind="optimizer", params=net.trainable_params(), lr=0.1)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
    x = RS.randn(5, 4).astype(np.float32)
    target = RS.randn(5, 3).astype(np.float32)
    step(Tensor(x), Tensor(target))

    dy = 2.0 * (x @ W0.T + B0 - target) / target.size
    reference = REFERENCES[name]
    expected_w = reference(W0.astype(np.float64), dy.T @ x, 0.1, 1, {}, True)
    expected_b = reference(B0.astype(np.float64), dy.sum(axis=0), 0.1, 1, {}, False)  # 1-D: no decay ('auto')
    np.testing.assert_allclose(net.weight.asnumpy(), expected_w, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(net.bias.asnumpy(), expected_b, rtol=2e-5, atol=2e-6)


SHAPES = {"conv.weight": (2, 1, 3, 3), "bn.gamma": (2,), "bn.beta": (2,), "fc.weight": (3, 2), "fc.bias": (3,),
          "embed.gamma_table": (4, 2)}
DECAYED = {
    "disable": set(SHAPES),                      # everything, even names MindSpore would exempt by itself
    "auto": {"conv.weight", "fc.weight", "embed.gamma_table"},
    "norm_and_bias": {"conv.weight", "fc.weight"},
}


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("wd_filter", sorted(DECAYED))
def test_weight_decay_filter_groups(wd_filter, name, graph_mode):
    params = [Parameter(Tensor(np.ones(shape, np.float32)), name=n) for n, shape in SHAPES.items()]
    opt = mindplug.create(name, kind="optimizer", params=params, lr=0.5, weight_decay=0.1,
                          weight_decay_filter=wd_filter)
    opt(tuple(Tensor(np.zeros(p.shape, np.float32)) for p in params))
    decayed = {p.name for p in params if not np.allclose(p.asnumpy(), 1.0)}
    assert decayed == DECAYED[wd_filter]
    for p in params:
        if p.name in decayed:
            np.testing.assert_allclose(p.asnumpy(), 1.0 - 0.5 * 0.1, rtol=1e-6)


def _params():
    return [Parameter(Tensor(W0), name="w")]


def test_misspelt_weight_decay_filter_is_an_error_not_norm_and_bias():
    with pytest.raises(ConfigError, match=r"'norm_and_bais'.*did you mean 'norm_and_bias'"):
        mindplug.create("sgd", kind="optimizer", params=_params(), lr=0.1, weight_decay_filter="norm_and_bais")


def test_unknown_argument_names_the_close_match():
    with pytest.raises(ComponentArgumentError, match="momentun.*did you mean 'momentum'"):
        mindplug.create("momentum", kind="optimizer", params=_params(), lr=0.1, momentun=0.9)


def test_factory_checks_arguments_when_called_directly():
    from mindplug.plugins.optimizers.factory import lion
    with pytest.raises(ComponentArgumentError, match="beta.*did you mean 'betas'"):
        lion(_params(), 0.1, beta=(0.9, 0.99))


@pytest.mark.parametrize("kwargs, message", [
    ({"use_nesterov": "False"}, "use_nesterov must be true or false"),
    ({"momentum": "0.9"}, "momentum must be a finite number"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ({"loss_scale": 0}, "loss_scale must be > 0"),
    ({"lr": [[0.1, 0.2]]}, "shape"),
    ({"lr": [0.1, -0.2]}, "lr must be finite and >= 0"),
    ({"params": []}, "no parameters"),
])
def test_bad_values_are_config_errors(kwargs, message):
    args = {"params": _params(), "lr": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        mindplug.create("momentum", kind="optimizer", **args)


def test_betas_from_a_yaml_list_and_bad_betas():
    opt = mindplug.create("adamw", kind="optimizer", params=_params(), lr=1e-3, betas=[0.8, 0.9])
    np.testing.assert_allclose([opt.beta1.asnumpy(), opt.beta2.asnumpy()], [0.8, 0.9], rtol=1e-6)
    with pytest.raises(ConfigError, match="betas must be 2 numbers"):
        mindplug.create("adamw", kind="optimizer", params=_params(), lr=1e-3, betas=[0.9])


def test_specs_advertise_exactly_what_the_factories_take():
    import inspect

    from mindplug.plugins.optimizers import factory
    for name in REFERENCES:
        info = mindplug.info(name, kind="optimizer")
        signature = inspect.signature(getattr(factory, name))
        assert str(signature) == info.metadata["signature"]
        taken = list(signature.parameters)
        assert taken == ["params", "lr", *info.metadata["common_arguments"], *info.metadata["arguments"]]
        for arg in ("momentum", "betas", "eps"):
            assert (f"has_{arg}" in info.tags) == (arg in info.metadata["arguments"])
    assert "has_momentum" in mindplug.info("sgd", kind="optimizer").tags
    assert mindplug.info("lion", kind="optimizer").tags == ("has_betas",)


def test_plugin_module_does_not_import_mindspore():
    code = ("import sys, mindplug.plugins.optimizers as p; specs = p.mindplug_optimizers(); "
            "assert len(specs) >= 8; assert 'mindspore' not in sys.modules, 'mindspore imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
