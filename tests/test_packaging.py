"""The regular (non-editable) build: one wheel with the three folders mapped onto `mindplug`."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = {"googlenet", "optimizers", "schedulers", "losses", "augmentations", "datasets"}


@pytest.mark.slow
def test_wheel_maps_folders_and_declares_builtin_plugins(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("mindplug-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("mindplug/__init__.py", "mindplug/py.typed", "mindplug/_registry.py",
                     "mindplug/plugins/__init__.py", "mindplug/plugins/googlenet/__init__.py",
                     "mindplug/ops/__init__.py", "mindplug/engine/imagenet_classes.txt",
                     "mindplug/plugins/datasets/data/LICENSE"):
        assert required in names, required
    assert not any(n.startswith(("core/", "plugins/", "ops/")) for n in names)
    assert any(n.startswith("mindplug/ops/") and n.endswith(".so") for n in names), "kernels not built"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[mindplug.plugins]" in text and "mindplug = mindplug._cli:main" in text
    for plugin in BUILTINS:
        assert f"{plugin} = mindplug.plugins.{plugin}" in text


def test_installed_entry_points_name_the_builtins():
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="mindplug.plugins") if ep.dist.name == "mindplug"}
    assert set(found) == BUILTINS
    assert all(value == f"mindplug.plugins.{name}" for name, value in found.items())
