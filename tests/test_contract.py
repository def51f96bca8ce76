"""The plugin contract, version 2, as a third-party author meets it: installed packages, the CLI, and
``mindplug.testing.check_plugin`` (the engine owns weights and schedules; arguments follow one table)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from test_engine import recipe, run  # noqa: E402  (tests/ is on sys.path under pytest)
from test_external_plugins import write_dist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "plugin-template"

#: a plugin written as the issue describes: a plain f(num_classes, in_channels) model with BatchNorm
PLAIN = '''
from mindplug import ComponentSpec, hookimpl

@hookimpl
def mindplug_models():
    return [ComponentSpec("bnnet", "model", "plain_plugin.net:bnnet", description="conv-BN-ReLU x2")]

@hookimpl
def mindplug_losses():
    return [ComponentSpec("plain_ce", "loss", "plain_plugin.net:plain_ce", description="CE without options")]
'''
PLAIN_NET = '''
import mindspore.nn as nn

def bnnet(num_classes, in_channels):
    return nn.SequentialCell([nn.Conv2d(in_channels, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dense(16, num_classes)])

def plain_ce():
    return nn.CrossEntropyLoss()

def broken_model(num_classes=10):
    raise ValueError("widths must be positive")
'''

#: a plugin with one defect per kind, each of which check_plugin must name
WRONG = '''
from mindplug import ComponentSpec, hookimpl

T = "wrong_plugin.parts:"

@hookimpl
def mindplug_models():
    return [ComponentSpec("fixed_head", "model", T + "fixed_head", description="ignores num_classes"),
            ComponentSpec("exploding", "model", T + "exploding", description="raises")]

@hookimpl
def mindplug_optimizers():
    return [ComponentSpec("own_lr", "optimizer", T + "own_lr", description="ignores the per-step rate")]

@hookimpl
def mindplug_schedulers():
    return [ComponentSpec("short", "scheduler", T + "short", description="one rate per epoch")]

@hookimpl
def mindplug_augmentations():
    return [ComponentSpec("to_float", "augmentation", T + "to_float", description="returns float")]

@hookimpl
def mindplug_losses():
    return [ComponentSpec("per_sample", "loss", T + "per_sample", description="no reduction")]

@hookimpl
def mindplug_datasets():
    return [ComponentSpec("nameless", "dataset", T + "nameless", description="no class names")]
'''
WRONG_PARTS = '''
import numpy as np
import mindspore.nn as nn
import mindspore.ops as ops

def fixed_head(num_classes=10, in_channels=3):
    return nn.SequentialCell([nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dense(4, 10)])

def exploding(num_classes=10):
    raise RuntimeError("out of coffee")

class OwnLR(nn.Optimizer):
    def __init__(self, params):
        super().__init__(0.1, params)
        self.assign = ops.Assign()

    def construct(self, gradients):
        for param, grad in zip(self._parameters, gradients):
            self.assign(param, param - 0.1 * grad)
        return True

def own_lr(params, lr):
    return OwnLR(params)

def short(*, lr, steps_per_epoch, num_epochs):
    return np.full(num_epochs, lr, np.float32)

def to_float():
    return lambda image: image.astype(np.float32) / 255.0

def per_sample():
    return nn.CrossEntropyLoss(reduction="none")

class Nameless:
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return np.zeros((8, 8, 1), np.uint8), 0

def nameless(*, data_dir=None, split="train"):
    return Nameless()
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("contract")
    plain = write_dist(base, "plain-plugin", "plain_plugin", {"__init__.py": PLAIN, "net.py": PLAIN_NET}, "1.0")
    wrong = write_dist(base, "wrong-plugin", "wrong_plugin", {"__init__.py": WRONG, "parts.py": WRONG_PARTS}, "1.0")
    template = base / "template"  # a copy keeps pip's build files out of the source tree
    shutil.copytree(TEMPLATE, template, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(template), str(plain), str(wrong)], check=True)
    return target


def _env(site: Path, **extra: str) -> dict:
    return {"PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def test_scaffold_is_the_template():
    from mindplug._scaffold import render

    files = render("example")
    for relative, text in files.items():
        assert (TEMPLATE / relative).read_text(encoding="utf-8") == text, relative
    tracked = subprocess.run(["git", "ls-files", str(TEMPLATE)], cwd=ROOT, capture_output=True, text=True).stdout
    if tracked.strip():  # in a git checkout the template holds nothing but the scaffold
        assert sorted(Path(p).relative_to("examples/plugin-template").as_posix()
                      for p in tracked.split()) == sorted(files)


def test_new_plugin_writes_a_package_that_passes_its_own_check(tmp_path):
    proc = run(["mindplug", "new-plugin", "shiny", "--dir", str(tmp_path / "pkg")])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pkg" / "mindplug_shiny" / "datasets.py").is_file()
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(tmp_path / "pkg")], check=True)
    proc = run(["mindplug", "doctor", "--check", "shiny"], env=_env(site))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for kind in ("model", "optimizer", "scheduler", "loss", "augmentation"):
        assert f"ok    {kind} 'shiny:" in proc.stdout
    again = run(["mindplug", "new-plugin", "shiny", "--dir", str(tmp_path / "pkg")])
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "already has" in again.stderr


def test_template_passes_check_plugin_and_a_wrong_plugin_fails_naming_each_defect(site):
    proc = run(["mindplug", "doctor", "--check", "example"], env=_env(site))
    assert proc.returncode == 0, proc.stdout[-3000:]
    code = textwrap.dedent("""
        import mindplug.testing
        try:
            mindplug.testing.check_plugin("wrong_plugin")
        except mindplug.testing.PluginCheckError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                         **_env(site)}, timeout=300).stdout
    assert "breaks the mindplug contract (7 defect(s))" in out, out
    expected = {
        "wrong_plugin:fixed_head": "not (2, 3): the factory must honour num_classes",
        "wrong_plugin:exploding": "RuntimeError: out of coffee",
        "wrong_plugin:own_lr": "per-step learning rate is 0 changed the parameters",
        "wrong_plugin:short": "not (12,): one rate per step",
        "wrong_plugin:to_float": "an augmentation keeps uint8 HWC",
        "wrong_plugin:per_sample": "not a scalar",
        "wrong_plugin:nameless": "has no class_names",
    }
    for component, message in expected.items():
        line = next((line for line in out.splitlines() if f"'{component}'" in line), "")
        assert line.lstrip(" -").startswith("FAIL") and message in line, (component, out)


def test_a_plain_batchnorm_plugin_model_trains_and_validates_exactly(site, tmp_path):
    cfg = recipe(str(tmp_path), "bn", model="bnnet", in_channels=1, mean=[72.9], std=[90.0], num_samples=96,
                 epoch_size=2, decay_epochs=2, opt="adamw", lr=0.01)
    proc = run(["mindplug", "train", "-c", cfg], env=_env(site))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    folder = tmp_path / "bn"
    history = json.loads((folder / "log.json").read_text())
    best = max(row["val_top1"] for row in history)
    proc = run(["mindplug", "validate", "-c", cfg, "--ckpt_path", str(folder / "bnnet-best.ckpt"), "--json"],
               env=_env(site))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["top1"] == pytest.approx(best, abs=1e-9) and result["count"] == 96
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["model"] == "bnnet" and saved["opt"] == "adamw"
    assert yaml.safe_load((folder / "runtime.yaml").read_text())["device"] == "CPU"


def test_a_plugin_optimizer_follows_its_schedule_and_untaken_keys_are_reported(site, tmp_path):
    cfg = recipe(str(tmp_path), "s", model="tinynet", image_resize=16, opt="signsgd", scheduler="linear_decay",
                 loss="focal", aux_factor=0.4, lr=0.05, epoch_size=3, val_while_train=False, num_samples=48)
    proc = run(["mindplug", "train", "-c", cfg], env=_env(site))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rates = [row["lr"] for row in json.loads((tmp_path / "s" / "log.json").read_text())]
    assert rates[0] > rates[1] > rates[2], rates  # linear decay reached the optimizer every step
    import mindspore as ms

    state = ms.load_checkpoint(str(tmp_path / "s" / "state" / "tinynet-3_3.ckpt"))
    assert int(state["global_step"].asnumpy().reshape(-1)[0]) == 9
    warned = [line for line in proc.stdout.splitlines() if line.startswith("warning: ")]
    assert any("'aux_factor'" in line and "'example:focal'" in line for line in warned), proc.stdout[-2000:]
    assert any("'decay_epochs'" in line and "'example:linear_decay'" in line for line in warned)
    strict = run(["mindplug", "train", "-c", cfg, "--overwrite", "True"], env=_env(site, MINDPLUG_STRICT_PLUGINS="1"))
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "'decay_epochs'" in strict.stderr and "MINDPLUG_STRICT_PLUGINS" in strict.stderr


def test_a_factory_that_raises_is_one_error_line(site, tmp_path):
    code = textwrap.dedent("""
        import mindplug
        from plain_plugin.net import broken_model
        mindplug.register(name="broken_model", kind="model")(broken_model)
        from mindplug.engine.cli import run
        import sys
        sys.exit(run("train", sys.argv[1:]))
    """)
    cfg = recipe(str(tmp_path), "x", model="broken_model")
    proc = subprocess.run([sys.executable, "-c", code, "-c", cfg], capture_output=True, text=True,
                          env={**os.environ, **_env(site)}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "the model 'local:broken_model' failed to build: ValueError: widths must be " \
                                 "positive" in errors[0]
    assert "Traceback" not in proc.stderr


def test_plugin_augmentation_adds_to_the_default_pipeline(site, tmp_path):
    data = {"transforms": {"train_extra": [{"type": "random_invert", "prob": 1.0},
                                           {"type": "random_invert", "prob": 1.0, "place": "decoded"}]},
            "image_resize": 16, "in_channels": 1, "hflip": 0.0, "color_jitter": None}
    code = textwrap.dedent(f"""
        from mindplug._transforms import build_transforms
        ops = build_transforms({data!r}, is_training=True)
        print([type(op).__name__ for op in ops])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **_env(site)}, timeout=300)
    assert out.returncode == 0, out.stderr
    names = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert names[:2] == ["ToGrayscale", "RandomInvert"] and names[-2] == "RandomInvert", names
    assert names[-1] == "Compose"  # normalize (then HWC2CHW) stays last: the added steps keep uint8 HWC
