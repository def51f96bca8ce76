"""Never lose work: atomic checkpoints, SIGKILL mid-epoch then --resume equals an uninterrupted run,
SIGTERM saves and exits cleanly, and a resumed run continues the same learning-rate sequence."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_engine import recipe, run, tiny_cli  # noqa: E402  (tests/ is on sys.path under pytest)

from mindplug import CheckpointError

STEPS = 96  # batches per epoch: long enough to be killed in the middle of one


def _recipe(tmp: str, name: str, **extra) -> str:
    settings = dict(model="tinynet", image_resize=16, num_samples=STEPS * 4, batch_size=4, epoch_size=3,
                    val_while_train=False, scheduler="cosine_decay", warmup_epochs=1, decay_epochs=2, lr=0.05,
                    log_interval=8, progress="log")
    settings.update(extra)
    return recipe(tmp, name, **settings)


def _start(tmp: str, cfg: str, *more: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3")
    return subprocess.Popen([sys.executable, tiny_cli(tmp), "train", "-c", cfg, *more], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _state(folder: str, name: str) -> dict:
    import mindspore as ms

    params = ms.load_checkpoint(os.path.join(folder, "state", name))
    return {k: (v if isinstance(v, str) else v.asnumpy()) for k, v in params.items()}


def _log(folder: str) -> list:
    with open(os.path.join(folder, "log.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _assert_same_weights(a: dict, b: dict) -> None:
    tensors = [k for k in a if not isinstance(a[k], str)]
    assert set(tensors) == {k for k in b if not isinstance(b[k], str)}
    for key in tensors:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("resume"))
    results = {}
    for name, extra in (("full", {}), ("full_nodrop", {"model": {"type": "tinynet", "drop_rate": 0.0}})):
        proc = run([sys.executable, tiny_cli(tmp), "train", "-c", _recipe(tmp, name, **extra)])
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        results[name] = os.path.join(tmp, name)
    return results


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    tmp = str(tmp_path)
    cfg = _recipe(tmp, "killed")
    folder = os.path.join(tmp, "killed")
    first = os.path.join(folder, "state", f"tinynet-1_{STEPS}.ckpt")
    proc = _start(tmp, cfg)
    deadline = time.time() + 240
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(first), "the first epoch never finished"
    # kill inside epoch 2, once it has trained a few batches
    for line in proc.stdout:
        if line.startswith("epoch 2/3 step"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(folder, "state", f"tinynet-2_{STEPS}.ckpt")), "not killed mid-epoch"

    resumed = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resuming from {first}: 1 epochs and 0 steps done, 2 epochs to go" in resumed.stdout
    assert "epoch 1/3" not in resumed.stdout  # only the remaining epochs
    final = f"tinynet-3_{STEPS}.ckpt"
    _assert_same_weights(_state(folder, final), _state(uninterrupted["full"], final))
    mine, theirs = _log(folder), _log(uninterrupted["full"])
    assert [r["epoch"] for r in mine] == [1, 2, 3]
    assert [r["lr"] for r in mine] == [r["lr"] for r in theirs]  # the same learning-rate sequence
    # the logged mean loss goes through a multi-threaded reduction: equal to float32 rounding
    np.testing.assert_allclose([r["train_loss"] for r in mine], [r["train_loss"] for r in theirs], rtol=1e-6)


def test_sigterm_saves_mid_epoch_and_resume_continues_exactly(uninterrupted, tmp_path):
    tmp = str(tmp_path)
    cfg = _recipe(tmp, "term", model={"type": "tinynet", "drop_rate": 0.0})
    folder = os.path.join(tmp, "term")
    proc = _start(tmp, cfg)
    output = []
    for line in proc.stdout:
        output.append(line)
        if line.startswith("epoch 2/3 step 16/"):
            proc.send_signal(signal.SIGTERM)
            break
    output.append(proc.stdout.read())
    proc.wait(timeout=60)
    text = "".join(output)
    assert proc.returncode == 128 + signal.SIGTERM, text[-2000:]
    assert "stopped by SIGTERM: state saved to" in text and "Traceback" not in text
    saved = [n for n in os.listdir(os.path.join(folder, "state")) if n.startswith("tinynet-2_")]
    assert len(saved) == 1 and int(saved[0].split("_")[1].split(".")[0]) < STEPS
    loop = json.loads(_state(folder, saved[0])["mindplug.train_state"])
    assert loop["epoch"] == 1 and 16 <= loop["step"] < STEPS

    resumed = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"1 epochs and {loop['step']} steps done" in resumed.stdout
    final = f"tinynet-3_{STEPS}.ckpt"
    _assert_same_weights(_state(folder, final), _state(uninterrupted["full_nodrop"], final))
    mine, theirs = _log(folder), _log(uninterrupted["full_nodrop"])
    # the interrupted epoch's mean loss covers all its steps, those before the stop included
    np.testing.assert_allclose([r["train_loss"] for r in mine], [r["train_loss"] for r in theirs], rtol=1e-6)
    again = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg, "--resume"])
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_atomic_files_and_unfinished_writes_are_ignored(uninterrupted, tmp_path):
    from mindplug.engine import state as st

    folder = uninterrupted["full"]
    newest = st.newest_state(folder)
    assert newest == os.path.join(folder, "state", f"tinynet-3_{STEPS}.ckpt")
    assert not [n for n in os.listdir(os.path.join(folder, "state")) if ".tmp" in n]
    # a crash mid-write leaves only a hidden temp file, which is never picked
    partial = os.path.join(folder, "state", f".tinynet-4_{STEPS}.tmp123.ckpt")
    with open(newest, "rb") as src, open(partial, "wb") as dst:
        dst.write(src.read()[:1000])
    try:
        assert st.newest_state(folder) == newest
    finally:
        os.remove(partial)
    truncated = str(tmp_path / "cut.ckpt")
    with open(newest, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[:2000])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        st.read_state(truncated)
    weights_only = os.path.join(folder, f"tinynet-3_{STEPS}.ckpt")
    with pytest.raises(CheckpointError, match="weights only"):
        st.read_state(weights_only)
    # a weights file given to --resume continues from the state saved with it
    assert st.resolve_resume(weights_only, "", False, folder).path == newest


def test_resume_with_another_batch_size_is_refused(uninterrupted):
    folder = uninterrupted["full"]
    tmp = os.path.dirname(folder)
    cfg = _recipe(tmp, "full", batch_size=8)
    started = time.time()
    proc = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg, "--resume", "--epoch_size", "4"])
    assert proc.returncode == 2 and "steps_per_epoch" in proc.stderr, proc.stderr[-2000:]
    assert time.time() - started < 60


def test_resume_with_another_epoch_size_is_refused(uninterrupted):
    # the learning-rate sequence spans epoch_size: a longer run is a new run (start it with --ckpt_path)
    tmp = os.path.dirname(uninterrupted["full"])
    cfg = _recipe(tmp, "full")
    proc = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg, "--resume", "--epoch_size", "7"])
    assert proc.returncode == 2 and "epoch_size = " in proc.stderr and "--ckpt_path" in proc.stderr, \
        proc.stderr[-2000:]


def test_keep_checkpoint_max_latest_and_top_k(tmp_path):
    from mindplug.engine import state as st

    names = [st.checkpoint_name("m", epoch, 5) for epoch in range(1, 6)]
    for name in names:
        for folder in (tmp_path, tmp_path / "state"):
            folder.mkdir(exist_ok=True)
            (folder / name).write_bytes(b"x")
    kept = st.prune(str(tmp_path), 3, list(names), {}, "latest_k")
    assert kept == names[2:]
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == sorted(names[2:])
    assert sorted(p.name for p in (tmp_path / "state").glob("*.ckpt")) == sorted(names[2:])
    scores = {names[2]: 80.0, names[3]: 60.0, names[4]: 70.0}
    kept = st.prune(str(tmp_path), 2, kept, scores, "top_k")
    assert kept == [names[2], names[4]]
    assert not (tmp_path / names[3]).exists() and not (tmp_path / "state" / names[3]).exists()
