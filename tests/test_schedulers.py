"""Built-in LR schedules: golden values computed by hand, MindCV's warmup/padding semantics, resume, errors."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import mindplug
from mindplug import ConfigError, UnknownComponentError

NAMES = ["constant", "cosine_decay", "warmup_cosine_decay", "exponential_decay", "polynomial_decay",
         "step_decay", "multi_step_decay", "one_cycle", "cyclic"]


def schedule(name, **kwargs):
    return mindplug.create(name, kind="scheduler", **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_every_schedule_gives_one_float32_rate_per_step(name):
    extra = {"multi_step_decay_milestones": [2]} if name == "multi_step_decay" else {}
    rates = schedule(name, lr=0.1, steps_per_epoch=3, num_epochs=4, **extra)
    assert rates.dtype == np.float32 and rates.shape == (12,)
    assert np.all(np.isfinite(rates)) and np.all(rates >= 0) and rates.max() <= 0.1 + 1e-7


def test_googlenet_recipe_cosine_decay_from_a_config_dict():
    """configs/googlenet: lr 0.045, min_lr 0, warmup 5, decay 145 of 150 epochs (10 steps per epoch here)."""
    cfg = {"type": "cosine_decay", "lr": 0.045, "min_lr": 0.0, "warmup_epochs": 5, "decay_epochs": 145}
    rates = mindplug.build(cfg, kind="scheduler", steps_per_epoch=10, num_epochs=150)
    assert rates.shape == (1500,)
    assert rates[0] == 0.0                                    # warmup_factor 0: the first step has rate 0
    assert rates[25] == pytest.approx(0.0225, rel=1e-6)       # halfway through the warmup
    assert rates[50] == pytest.approx(0.045, rel=1e-6)        # first step after the warmup: the peak
    assert rates[50 + 725] == pytest.approx(0.0225, rel=1e-6)  # 72.5 of 145 decay epochs: cos = 0
    # the last step, 144.9 epochs into the decay: 0.0225 * (1 + cos(pi * 144.9 / 145))
    assert rates[-1] == pytest.approx(5.2810e-08, rel=1e-3)   # ~ 0.0225 * (pi * 0.1 / 145) ** 2 / 2


def test_cosine_shorter_than_the_run_is_padded_with_min_lr():
    rates = schedule("cosine_decay", lr=0.1, min_lr=0.01, steps_per_epoch=2, num_epochs=5, warmup_epochs=1,
                     decay_epochs=2)
    # warmup 0, 0.05; cosine at 0, 0.5, 1, 1.5 of 2 epochs: 0.01 + 0.045 * (1 + cos(pi t / 2)); then min_lr
    golden = [0.0, 0.05, 0.1, 0.0868198, 0.055, 0.0231802, 0.01, 0.01, 0.01, 0.01]
    np.testing.assert_allclose(rates, golden, rtol=1e-5)


def test_cosine_cycles_restart_at_a_decayed_peak_and_stair_holds_each_epoch():
    rates = schedule("cosine_decay", lr=0.2, min_lr=0.0, steps_per_epoch=2, num_epochs=4, decay_epochs=2,
                     num_cycles=2, cycle_decay=0.5, lr_epoch_stair=True)
    # per epoch: cos at 0 and 1 of 2 epochs -> peak, peak / 2; second cycle peak 0.1
    np.testing.assert_allclose(rates, [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05], rtol=1e-6)


def test_warmup_factor_and_stair_warmup():
    rates = schedule("constant", lr=0.1, steps_per_epoch=2, num_epochs=3, warmup_epochs=2, warmup_factor=0.2)
    np.testing.assert_allclose(rates, [0.02, 0.04, 0.06, 0.08, 0.1, 0.1], rtol=1e-6)
    stair = schedule("constant", lr=0.1, steps_per_epoch=2, num_epochs=3, warmup_epochs=2, warmup_factor=0.2,
                     lr_epoch_stair=True)
    np.testing.assert_allclose(stair, [0.02, 0.02, 0.06, 0.06, 0.1, 0.1], rtol=1e-6)


def test_step_multi_step_exponential_polynomial_golden_values():
    np.testing.assert_allclose(
        schedule("step_decay", lr=0.1, decay_epochs=2, decay_rate=0.5, steps_per_epoch=2, num_epochs=5),
        [0.1] * 4 + [0.05] * 4 + [0.025] * 2, rtol=1e-6)
    # milestones count epochs after the warmup, as MindCV does
    np.testing.assert_allclose(
        schedule("multi_step_decay", lr=0.1, multi_step_decay_milestones=[3, 1], decay_rate=0.1, steps_per_epoch=1,
                 num_epochs=6, warmup_epochs=1, warmup_factor=0.5),
        [0.05, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    np.testing.assert_allclose(
        schedule("exponential_decay", lr=0.1, decay_rate=0.25, steps_per_epoch=2, num_epochs=2),
        [0.1, 0.05, 0.025, 0.0125], rtol=1e-6)
    np.testing.assert_allclose(
        schedule("polynomial_decay", lr=0.1, decay_rate=2.0, steps_per_epoch=1, num_epochs=4),
        [0.1, 0.05625, 0.025, 0.00625], rtol=1e-6)


def test_one_cycle_and_cyclic_golden_values():
    rates = schedule("one_cycle", lr=1.0, min_lr=0.0, steps_per_epoch=2, num_epochs=5)
    # 10 steps, pct_start 0.3: up from 1/25 over steps 0..2, cosine down to 0 over steps 2..9
    assert rates[0] == pytest.approx(0.04) and rates[2] == pytest.approx(1.0) and rates[-1] == 0.0
    assert rates[1] == pytest.approx(0.52, rel=1e-6)
    assert rates[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)), rel=1e-6)
    cyc = schedule("cyclic", lr=1.0, min_lr=0.2, num_cycles=2, steps_per_epoch=2, num_epochs=4)
    np.testing.assert_allclose(cyc, [0.2, 0.6, 1.0, 0.6, 0.2, 0.6, 1.0, 0.6], rtol=1e-6)
    tri2 = schedule("cyclic", lr=1.0, min_lr=0.0, num_cycles=2, mode="triangular2", steps_per_epoch=2,
                    num_epochs=4)
    assert tri2[2] == pytest.approx(1.0) and tri2[6] == pytest.approx(0.5)


def test_warmup_cosine_decay_is_cosine_decay():
    args = dict(lr=0.1, steps_per_epoch=3, num_epochs=6, warmup_epochs=2, min_lr=0.001)
    np.testing.assert_array_equal(schedule("warmup_cosine_decay", **args), schedule("cosine_decay", **args))


def test_resume_at_step_k_continues_the_same_sequence():
    """A resumed run rebuilds the schedule and the optimizer, restores global_step = k and must see rates[k:]."""
    from mindspore import Parameter, Tensor

    args = dict(lr=0.1, steps_per_epoch=4, num_epochs=5, warmup_epochs=1, min_lr=0.0)
    rates = schedule("cosine_decay", **args)
    k = 7
    params = [Parameter(Tensor(np.ones(3, np.float32)), name="w")]
    opt = mindplug.create("sgd", kind="optimizer", params=params, lr=schedule("cosine_decay", **args))
    opt.global_step.set_data(Tensor(np.array([k], np.int32)))
    seen = []
    for _ in range(3):
        seen.append(float(opt.get_lr().asnumpy()))
        opt((Tensor(np.zeros(3, np.float32)),))
    np.testing.assert_allclose(seen, rates[k:k + 3], rtol=1e-6)


def test_decay_longer_than_the_run_warns_like_mindcv():
    with pytest.warns(UserWarning, match="cut off before it reaches min_lr"):
        schedule("cosine_decay", lr=0.1, steps_per_epoch=1, num_epochs=5, warmup_epochs=1, decay_epochs=5)


@pytest.mark.parametrize("name, kwargs, message", [
    ("cosine_decay", {"num_epochs": -1}, "num_epochs must be an integer >= 1"),
    ("cosine_decay", {"warmup_epochs": 9}, "warmup_epochs=9 is more than num_epochs=4"),
    ("constant", {"warmup_epochs": 5}, "warmup_epochs=5 is more than num_epochs=4"),
    ("cosine_decay", {"warmup_epochs": 4}, "leaves no epoch"),
    ("cosine_decay", {"decay_epochs": 0}, "decay_epochs must be an integer >= 1"),
    ("constant", {"steps_per_epoch": 2.5}, "steps_per_epoch must be an integer"),
    ("constant", {"lr": 0}, "lr must be a number > 0"),
    ("constant", {"warmup_factor": 2}, "warmup_factor must be a number >= 0.0 and <= 1.0"),
    ("multi_step_decay", {"multi_step_decay_milestones": "30,60"}, "milestones must be a list"),
    ("one_cycle", {"warmup_epochs": 1}, "set warmup_epochs: 0"),
    ("one_cycle", {"anneal_strategy": "cosine"}, "anneal_strategy must be one of 'cos', 'linear'"),
    ("cyclic", {"num_cycles": 20}, "do not fit"),
])
def test_bad_arguments_are_config_errors(name, kwargs, message):
    args = {"lr": 0.1, "steps_per_epoch": 2, "num_epochs": 4, **kwargs}
    if name == "multi_step_decay":
        args.setdefault("multi_step_decay_milestones", [1])
    with pytest.raises(ConfigError, match=message):
        schedule(name, **args)


def test_unknown_schedule_and_argument_name_the_fix():
    with pytest.raises(UnknownComponentError, match="did you mean 'cosine_decay'"):
        schedule("cosine_decy", lr=0.1, steps_per_epoch=1, num_epochs=1)
    with pytest.raises(mindplug.ComponentArgumentError, match="did you mean 'decay_epochs'"):
        schedule("cosine_decay", lr=0.1, steps_per_epoch=1, num_epochs=1, decay_epoch=1)


def test_plugin_module_does_not_import_mindspore():
    code = ("import sys, mindplug.plugins.schedulers as p; assert len(p.mindplug_schedulers()) == 9; "
            "assert 'mindspore' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
