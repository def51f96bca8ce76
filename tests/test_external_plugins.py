"""Third-party plugins installed with pip into a throw-away location, seen with no further step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "plugin-template"


def write_dist(base: Path, dist: str, package: str, files: Dict[str, str], version: str = "0.7") -> Path:
    """A plugin distribution whose entry point (named after the package) is the package itself."""
    folder = base / dist
    (folder / package).mkdir(parents=True)
    (folder / "setup.py").write_text(textwrap.dedent(f"""
        from setuptools import setup
        setup(name="{dist}", version="{version}", packages=["{package}"],
              entry_points={{"mindplug.plugins": ["{package} = {package}"]}})
    """))
    for name, text in files.items():
        (folder / package / name).write_text(textwrap.dedent(text))
    return folder


def _write_dist(base: Path, dist: str, package: str, body: str) -> Path:
    return write_dist(base, dist, package, {"__init__.py": body})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("dists")
    broken = _write_dist(base, "mindplug-broken", "broken_plugin", """
        import module_that_is_not_installed  # the deliberate failure
        from mindplug import ComponentSpec, hookimpl

        @hookimpl
        def mindplug_models():
            return [ComponentSpec("brokennet", "model", "broken_plugin.net:make")]
    """)
    dup = _write_dist(base, "mindplug-dup", "dup_plugin", """
        from mindplug import ComponentSpec, hookimpl

        @hookimpl
        def mindplug_models():
            return [ComponentSpec("tinynet", "model", "dup_plugin:make", description="another tinynet")]

        def make(num_classes=10):
            return ("dup", num_classes)
    """)
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(TEMPLATE), str(broken), str(dup)], check=True)
    return target


def _run(site: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "mindplug", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_external_components_are_listed(site):
    out = _run(site, "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {(r["kind"], r["name"], r["plugin"]) for r in json.loads(out.stdout)}
    assert {("model", "tinynet", "example"), ("optimizer", "signsgd", "example"),
            ("augmentation", "random_invert", "example"), ("model", "tinynet", "dup_plugin")} <= rows
    assert "mindplug-broken 0.7" in out.stderr and "module_that_is_not_installed" in out.stderr


def test_plugins_command_reports_the_broken_distribution(site):
    out = _run(site, "plugins")
    assert out.returncode == 0
    assert "example" in out.stdout and "mindplug-example" in out.stdout
    assert "FAILED plugin 'broken_plugin' (mindplug-broken 0.7) failed to import" in out.stdout


def test_strict_mode_fails_the_listing(site):
    env_code = ("import os; os.environ['MINDPLUG_STRICT_PLUGINS'] = '1'; import mindplug\n"
                "try:\n    mindplug.list()\nexcept mindplug.PluginLoadError as e:\n    print('STRICT', e)")
    out = _run(site, code=env_code)
    assert out.stdout.startswith("STRICT ") and "(mindplug-broken 0.7) failed to import" in out.stdout, out.stderr


def test_create_builds_external_components_and_duplicates_need_a_choice(site):
    code = textwrap.dedent("""
        import warnings; warnings.simplefilter("ignore")
        import numpy as np, mindplug
        try:
            mindplug.create("tinynet")
        except mindplug.AmbiguousComponentError as e:
            print("AMBIGUOUS", "example:tinynet" in str(e), "dup_plugin:tinynet" in str(e))
        net = mindplug.create("example:tinynet", num_classes=3, in_channels=1)
        import mindspore as ms
        out = net(ms.Tensor(np.zeros((2, 1, 8, 8), np.float32)))
        print("LOGITS", out.shape)
        opt = mindplug.create("signsgd", kind="optimizer", params=net.trainable_params(), lr=0.1)
        print("OPT", type(opt).__name__)
        aug = mindplug.create("random_invert", kind="augmentation", prob=1.0)
        print("AUG", int(aug(np.zeros((4, 4, 1), np.uint8)).max()))
        print("DUP", mindplug.create("dup_plugin:tinynet", num_classes=4))
        try:
            mindplug.create("brokennet")
        except mindplug.UnknownComponentError as e:
            print("BROKEN", "mindplug-broken 0.7" in str(e))
    """)
    out = _run(site, code=code)
    assert out.returncode == 0, out.stderr
    assert "AMBIGUOUS True True" in out.stdout
    assert "LOGITS (2, 3)" in out.stdout
    assert "OPT SignSGD" in out.stdout
    assert "AUG 255" in out.stdout
    assert "DUP ('dup', 4)" in out.stdout
    assert "BROKEN True" in out.stdout
