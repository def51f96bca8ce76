"""Export: ONNX logits match MindSpore's (checked with onnxruntime), and MindIR loads and runs."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from test_engine import recipe, run  # noqa: E402  (tests/ is on sys.path under pytest)

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 1-epoch GoogLeNet on the sample (one input channel, 32x32), exported from its weights file."""
    tmp = str(tmp_path_factory.mktemp("export"))
    cfg = recipe(tmp, "x", epoch_size=1, decay_epochs=1, num_samples=32, in_channels=1, mean=[72.9], std=[90.0],
                 val_while_train=False)
    proc = run([sys.executable, "train.py", "-c", cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cfg, os.path.join(tmp, "x", "googlenet-1_2.ckpt")


def _mindspore_logits(cfg_path: str, ckpt: str, batch: np.ndarray) -> np.ndarray:
    import mindspore as ms

    from mindplug.engine.inference import load_network
    from mindplug.engine.recipe import load_recipe

    net, classes = load_network(load_recipe(cfg_path), ckpt)
    assert classes == 10
    return net(ms.Tensor(batch)).asnumpy()


def test_onnx_matches_mindspore_logits(checkpoint, tmp_path):
    cfg, ckpt = checkpoint
    out = str(tmp_path / "g.onnx")
    proc = run(["mindplug", "export", "--ckpt_path", ckpt, "--format", "ONNX", "--output", out, "--batch_size", "4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported ONNX for input 4x1x32x32" in proc.stdout
    batch = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: batch})
    expected = _mindspore_logits(cfg, ckpt, batch)
    assert onnx_logits.shape == (4, 10)
    np.testing.assert_allclose(onnx_logits, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(expected[0], expected[1])  # real inputs, not a constant network


def test_mindir_default_path_loads_and_runs(checkpoint):
    import mindspore as ms
    from mindspore import nn

    cfg, ckpt = checkpoint
    proc = run(["mindplug", "export", "--ckpt_path", ckpt])  # MINDIR is the default format
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = ckpt[:-len(".ckpt")] + ".mindir"
    assert os.path.isfile(path)
    batch = np.random.default_rng(1).standard_normal((1, 1, 32, 32)).astype(np.float32)
    graph = nn.GraphCell(ms.load(path))
    np.testing.assert_allclose(graph(ms.Tensor(batch)).asnumpy(), _mindspore_logits(cfg, ckpt, batch),
                               rtol=1e-4, atol=1e-4)


def test_unknown_format_is_a_clear_error(checkpoint):
    _, ckpt = checkpoint
    proc = run(["mindplug", "export", "--ckpt_path", ckpt, "--format", "TFLITE"])
    assert proc.returncode == 2 and "MINDIR, ONNX" in proc.stderr
