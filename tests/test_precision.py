"""amp_level on the CPU: bfloat16 in the kernels' GEMMs where the CPU has AVX512_BF16, float32 with one
notice where it cannot be had, the precision of each phase in bench's table and the run's runtime.yaml."""
from __future__ import annotations

import os
import sys

import pytest
import yaml

from mindplug.ops import _library
from test_engine import recipe, run

pytestmark = pytest.mark.skipif(not _library.available(), reason="kernel library not built")
BF16 = _library.bf16_available()
EXPECTED = "bfloat16" if BF16 else "float32"


def _bench(tmp: str, *extra: str, env=None):
    cfg = recipe(tmp, "b", in_channels=1, mean=[72.9], std=[90.0], batch_size=8)
    proc = run([sys.executable, "-m", "mindplug", "bench", "-c", cfg, "--steps", "1", *extra], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| train") or line.startswith("| infer")}
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| phase"))
    column = [c.strip() for c in header.split("|")[1:-1]].index("precision")
    return {phase: row[column] for phase, row in rows.items()}, proc.stdout + proc.stderr


def test_bench_reports_each_phases_precision(tmp_path):
    assert _bench(str(tmp_path))[0] == {"train": "float32", "infer": "float32"}
    assert _bench(str(tmp_path), "--amp_level", "O2")[0] == {"train": EXPECTED, "infer": EXPECTED}
    assert _bench(str(tmp_path), "--amp_level", "O3", "--val_amp_level", "O0")[0] == {
        "train": EXPECTED, "infer": "float32"}


def test_without_bf16_the_same_recipe_runs_float32_with_one_notice(tmp_path):
    """The portable GEMM (as on a CPU without AVX512_BF16) and native kernels both fall back."""
    precisions, err = _bench(str(tmp_path), "--amp_level", "O2", env={"MINDPLUG_GEMM": "own"})
    assert precisions == {"train": "float32", "infer": "float32"}
    assert "amp_level O2: this CPU has no AVX512_BF16" in err and "computing in float32" in err
    precisions, err = _bench(str(tmp_path), "--amp_level", "O1", "--kernels", "native", "--steps", "1")
    assert precisions == {"train": "float32", "infer": "float32"}
    assert "kernels: native" in err and "computing in float32" in err
    assert "Traceback" not in err


def test_training_records_its_precision_and_needs_no_loss_scale(tmp_path):
    tmp = str(tmp_path)
    cfg = recipe(tmp, "t", in_channels=1, mean=[72.9], std=[90.0], epoch_size=1, decay_epochs=1,
                 amp_level="O2", loss_scale_type="auto")
    proc = run([sys.executable, "train.py", "-c", cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = yaml.safe_load(open(os.path.join(tmp, "t", "runtime.yaml"), encoding="utf-8"))
    assert record["precision"] == EXPECTED and record["val_precision"] == "float32"
    assert "loss scale" not in proc.stderr.lower()
    best = os.path.join(tmp, "t", "googlenet-best.ckpt")
    proc = run([sys.executable, "validate.py", "-c", cfg, "--ckpt_path", best, "--val_amp_level", "O2"])
    assert proc.returncode == 0 and "top-1" in proc.stdout + proc.stderr, proc.stderr[-3000:]
