"""End to end on the embedded Fashion-MNIST sample: train, validate, predict, and the error paths.

Commands run in subprocesses exactly as a user types them (``python train.py``, ``mindplug ...``), on a
few dozen 32x32 images so the whole file stays well under a minute or two of CPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Dict, List, Optional

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_RECIPE = os.path.join(ROOT, "configs", "googlenet", "googlenet_ascend.yaml")

#: a test model, registered in-process by the helper script: a conv, global mean, dropout, dense
TINY_PLUGIN = textwrap.dedent('''
    import sys
    import mindplug
    from mindspore import nn, ops

    class MaskDropout(nn.Cell):
        """Dropout from a seeded UniformReal mask: MindSpore's CPU Dropout kernel draws differently from
        run to run under the same seed, UniformReal does not."""

        def __init__(self, p):
            super().__init__()
            self.p = float(p)
            self.uniform = ops.UniformReal(seed=1, seed2=2)

        def construct(self, x):
            if not self.training or self.p == 0.0:
                return x
            keep = (self.uniform(x.shape) >= self.p).astype(x.dtype)
            return x * keep / (1.0 - self.p)

    class Tiny(nn.Cell):
        def __init__(self, num_classes=10, in_channels=3, drop_rate=0.2):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 8, 3, stride=2, pad_mode="same", has_bias=True)
            self.relu = nn.ReLU()
            self.dropout = MaskDropout(drop_rate)
            self.classifier = nn.Dense(8, num_classes)

        def construct(self, x):
            return self.classifier(self.dropout(self.relu(self.conv(x)).mean(axis=(2, 3))))

    @mindplug.register(name="tinynet", kind="model")
    def tinynet(num_classes: int = 10, in_channels: int = 3, drop_rate: float = 0.2, pretrained: bool = False):
        return Tiny(num_classes, in_channels, drop_rate)
''')

TINY_CLI = TINY_PLUGIN + textwrap.dedent('''
    from mindplug.engine.cli import run

    if __name__ == "__main__":
        sys.exit(run(sys.argv[1], sys.argv[2:]))
''')


def recipe(tmp: str, name: str, **overrides) -> str:
    """A small recipe on the embedded sample, written to ``tmp/name.yaml``."""
    data = {"model": "googlenet", "dataset": "fashion_mnist_sample", "data_dir": None, "num_samples": 48,
            "image_resize": 32, "batch_size": 16, "epoch_size": 2, "scheduler": "cosine_decay",
            "warmup_epochs": 0, "decay_epochs": 2, "opt": "momentum", "lr": 0.01, "loss": "CE",
            "val_while_train": True, "num_parallel_workers": 1, "color_jitter": None, "scale": [0.5, 1.0],
            "ckpt_save_dir": os.path.join(tmp, name), "distribute": False}
    data.update(overrides)
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle)
    return path


def run(args: List[str], cwd: Optional[str] = None, timeout: float = 300,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3")
    full_env.update(env or {})
    return subprocess.run(args, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


def tiny_cli(tmp: str) -> str:
    path = os.path.join(tmp, "tinycli.py")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(TINY_CLI)
    return path


def sample_images(tmp: str, count: int = 2) -> List[str]:
    """Real images of the sample's test split, saved as PNG files."""
    from PIL import Image

    import mindplug

    source = mindplug.create("fashion_mnist_sample", kind="dataset", split="val")
    paths = []
    for index in range(count):
        image, _ = source[index]
        path = os.path.join(tmp, f"img{index}.png")
        Image.fromarray(image[:, :, 0]).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Dict[str, str]:
    """GoogLeNet trained for 2 epochs on 48 sample images at 32x32 with the seed's command line."""
    tmp = str(tmp_path_factory.mktemp("engine"))
    cfg = recipe(tmp, "g")
    start = time.time()
    proc = run([sys.executable, "train.py", "--config", cfg, "--distribute", "False"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {"tmp": tmp, "cfg": cfg, "dir": os.path.join(tmp, "g"), "out": proc.stdout,
            "seconds": str(time.time() - start)}


def test_train_writes_checkpoints_logs_plot_and_resolved_config(trained):
    folder = trained["dir"]
    for name in ("googlenet-1_3.ckpt", "googlenet-2_3.ckpt", "googlenet-best.ckpt", "config.yaml", "log.csv",
                 "log.json", "curves.png", "class_names.txt", "state/googlenet-2_3.ckpt"):
        assert os.path.isfile(os.path.join(folder, name)), name
    with open(os.path.join(folder, "log.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["val_images"] == 48 and 0 <= row["val_top1"] <= 100 for row in history)
    assert all(np.isfinite(row["train_loss"]) for row in history)
    with open(os.path.join(folder, "log.csv"), encoding="utf-8") as handle:
        assert handle.readline().startswith("epoch,lr,train_loss")
        assert len(handle.readlines()) == 2
    with open(os.path.join(folder, "curves.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(folder, "config.yaml"), encoding="utf-8") as handle:
        saved = yaml.safe_load(handle)
    assert saved["image_resize"] == 32 and saved["scale"] == [0.5, 1.0] and saved["distribute"] is False
    assert "epoch 2/2" in trained["out"] and "validation top-1" in trained["out"]


def test_seed_validate_command_reproduces_the_logged_accuracy(trained):
    ckpt = os.path.join(trained["dir"], "googlenet-2_3.ckpt")
    proc = run([sys.executable, "validate.py", "-c", trained["cfg"], "--data_dir", "none", "--ckpt_path", ckpt])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(trained["dir"], "log.json"), encoding="utf-8") as handle:
        last = json.load(handle)[-1]
    assert f"top-1 {last['val_top1']:.2f}%" in proc.stdout
    assert f"top-5 {last['val_top5']:.2f}%" in proc.stdout


def test_mindplug_validate_json_from_a_state_file(trained):
    ckpt = os.path.join(trained["dir"], "state", "googlenet-2_3.ckpt")
    proc = run(["mindplug", "validate", "-c", trained["cfg"], "--ckpt_path", ckpt, "--json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["count"] == 48 and set(result) >= {"top1", "top5", "loss"}


def test_validate_with_val_tta_hflip_scores_the_mirror_too(trained):
    ckpt = os.path.join(trained["dir"], "googlenet-2_3.ckpt")
    results = {}
    for tta in ("none", "hflip"):
        proc = run(["mindplug", "validate", "-c", trained["cfg"], "--ckpt_path", ckpt, "--val_tta", tta, "--json"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("test-time augmentation 'hflip'" in proc.stdout + proc.stderr) == (tta == "hflip")
        results[tta] = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert results["hflip"]["count"] == results["none"]["count"] == 48
    assert results["hflip"]["loss"] != pytest.approx(results["none"]["loss"], rel=1e-6)


def test_predict_table_and_json_with_class_names(trained):
    images = sample_images(trained["tmp"])
    ckpt = os.path.join(trained["dir"], "googlenet-best.ckpt")
    proc = run(["mindplug", "predict", "--ckpt_path", ckpt, "--topk", "3", "--json", *images])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout[proc.stdout.index("["):])
    names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"}
    assert [r["image"] for r in results] == images
    for result in results:
        assert [t["rank"] for t in result["top"]] == [1, 2, 3]
        assert {t["name"] for t in result["top"]} <= names
        probs = [t["probability"] for t in result["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-5
    table = run(["mindplug", "predict", "--ckpt_path", ckpt, images[0]])
    assert table.returncode == 0 and "probability" in table.stdout and images[0] in table.stdout


def test_ema_accumulation_clipping_and_dynamic_loss_scale_train(tmp_path):
    tmp = str(tmp_path)
    cfg = recipe(tmp, "t", model="tinynet", image_resize=16, epoch_size=2, ema=True, ema_decay=0.5,
                 clip_grad=True, clip_value=1.0, gradient_accumulation_steps=2, loss_scale_type="dynamic",
                 loss_scale=256.0, keep_checkpoint_max=1, mode=1, val_tta="hflip")
    proc = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = os.path.join(tmp, "t")
    assert sorted(f for f in os.listdir(folder) if f.endswith(".ckpt")) == ["tinynet-2_3.ckpt", "tinynet-best.ckpt"]
    import mindspore as ms

    state = ms.load_checkpoint(os.path.join(folder, "state", "tinynet-2_3.ckpt"))
    weights = ms.load_checkpoint(os.path.join(folder, "tinynet-2_3.ckpt"))
    loop = json.loads(state["mindplug.train_state"])
    assert (loop["epoch"], loop["global_step"]) == (2, 6)
    assert int(state["global_step"].asnumpy().reshape(-1)[0]) == 4  # 2 updates per epoch of 3 batches (2 + the last 1)
    assert float(state["loss_scale"].asnumpy()) == 256.0
    # the weights file holds the EMA weights, the state file both
    assert np.array_equal(weights["classifier.weight"].asnumpy(), state["ema.classifier.weight"].asnumpy())
    assert not np.array_equal(state["classifier.weight"].asnumpy(), state["ema.classifier.weight"].asnumpy())
    # the validation after each epoch scored the mirror too (val_tta), as validate of the same weights does
    with open(os.path.join(folder, "log.json"), encoding="utf-8") as handle:
        logged = json.load(handle)[-1]["val_loss"]
    scores = {}
    for tta in ("hflip", "none"):
        proc = run([sys.executable, tiny_cli(tmp), "validate", "-c", cfg, "--ckpt_path",
                    os.path.join(folder, "tinynet-2_3.ckpt"), "--val_tta", tta, "--json"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        scores[tta] = json.loads(proc.stdout[proc.stdout.index("{"):])["loss"]
    assert scores["hflip"] == pytest.approx(logged, rel=1e-5)
    assert scores["none"] != pytest.approx(logged, rel=1e-5)


def test_progressive_resizing_trains_each_epoch_at_its_size(tmp_path):
    tmp = str(tmp_path)
    cfg = recipe(tmp, "r", model="tinynet", image_resize=16, epoch_size=3, progressive_sizes=[8, 12, 16],
                 progressive_epochs=[1, 2, 3], keep_checkpoint_max=1)
    proc = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(tmp, "r", "log.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    assert [row["train_size"] for row in history] == [8, 12, 16]
    assert all(row["val_images"] == 48 for row in history)  # validated at the eval pipeline's 16 px each epoch
    for epoch, size in ((1, 8), (2, 12), (3, 16)):
        assert f"epoch {epoch}/3 at {size} px" in proc.stdout + proc.stderr
    # the network really saw 8 px images in epoch 1: the same run without the schedule has another loss
    plain = recipe(tmp, "p", model="tinynet", image_resize=16, epoch_size=3, keep_checkpoint_max=1)
    proc = run([sys.executable, tiny_cli(tmp), "train", "-c", plain])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(tmp, "p", "log.json"), encoding="utf-8") as handle:
        first = json.load(handle)[0]
    assert "train_size" not in first
    assert first["train_loss"] != pytest.approx(history[0]["train_loss"], rel=1e-6)


# ---------------------------------------------------------------- errors: clear, non-zero, before long work

def _fails_fast(proc: subprocess.CompletedProcess, started: float, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert any(line.startswith("error: ") for line in proc.stderr.splitlines()), proc.stderr[-2000:]
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert "epoch 1" not in proc.stdout
    assert time.time() - started < 60


def test_missing_data_dir(tmp_path):
    started = time.time()
    missing = str(tmp_path / "no_such_dir")
    proc = run([sys.executable, "train.py", "--config", SEED_RECIPE, "--data_dir", missing, "--distribute", "False"])
    _fails_fast(proc, started, missing, "does not exist")


def test_empty_split(tmp_path):
    from PIL import Image

    for klass in ("a", "b"):
        os.makedirs(tmp_path / "data" / "train" / klass)
        Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "data" / "train" / klass / "x.png")
        os.makedirs(tmp_path / "data" / "val" / klass)
    cfg = recipe(str(tmp_path), "e", dataset="imagenet", data_dir=str(tmp_path / "data"), num_samples=None,
                 batch_size=2)
    started = time.time()
    proc = run([sys.executable, "train.py", "--config", cfg])
    _fails_fast(proc, started, "val")


def test_validate_without_or_with_a_missing_checkpoint(tmp_path):
    cfg = recipe(str(tmp_path), "v")
    started = time.time()
    proc = run([sys.executable, "validate.py", "-c", cfg, "--ckpt_path", str(tmp_path / "nope.ckpt")])
    _fails_fast(proc, started, "nope.ckpt", "not found")
    proc = run([sys.executable, "validate.py", "-c", cfg])
    _fails_fast(proc, started, "--ckpt_path")
    proc = run([sys.executable, "train.py", "-c", cfg, "--ckpt_path", str(tmp_path / "nope.ckpt")])
    _fails_fast(proc, started, "nope.ckpt", "random")


def test_incompatible_or_truncated_checkpoint(trained, tmp_path):
    good = os.path.join(trained["dir"], "googlenet-2_3.ckpt")
    import mindspore as ms
    from mindspore import nn

    foreign = str(tmp_path / "dense.ckpt")
    ms.save_checkpoint(nn.Dense(3, 10), foreign)
    started = time.time()
    proc = run([sys.executable, "validate.py", "-c", trained["cfg"], "--ckpt_path", foreign])
    _fails_fast(proc, started, "dense.ckpt", "does not fit")
    cut = tmp_path / "cut.ckpt"
    with open(good, "rb") as src:
        cut.write_bytes(src.read()[:5000])
    proc = run([sys.executable, "validate.py", "-c", trained["cfg"], "--ckpt_path", str(cut)])
    _fails_fast(proc, started, "cut.ckpt")
    other = recipe(str(tmp_path), "o", num_classes=7)
    proc = run([sys.executable, "validate.py", "-c", other, "--ckpt_path", good])
    _fails_fast(proc, started, "10 classes", "num_classes = 7")


def test_unknown_key_and_resume_without_state(tmp_path):
    cfg = recipe(str(tmp_path), "k")
    started = time.time()
    proc = run(["mindplug", "train", "-c", cfg, "--warmup_epoch", "1"])
    _fails_fast(proc, started, "warmup_epoch", "did you mean 'warmup_epochs'")
    proc = run(["mindplug", "train", "-c", cfg, "--resume"])
    _fails_fast(proc, started, "no train state")


def test_seed_recipe_runs_with_one_notice(tmp_path):
    """googlenet_ascend.yaml unchanged (distribute True, 8 workers, Ascend sizes) on a tiny folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for klass in ("cat", "dog"):
            os.makedirs(tmp_path / split / klass)
            for i in range(count):
                pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / klass / f"{i}.jpg")
    proc = run([sys.executable, "train.py", "--config", SEED_RECIPE, "--data_dir", str(tmp_path),
                "--image_resize", "32", "--batch_size", "4", "--epoch_size", "1", "--warmup_epochs", "0",
                "--decay_epochs", "1", "--ckpt_save_dir", str(tmp_path / "ckpt")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    notices = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("notice:")]
    assert len(notices) == 1
    assert "distribute is True but this process was not launched by msrun: running as one process" in notices[0]
    assert os.path.isfile(tmp_path / "ckpt" / "googlenet-1_2.ckpt")


def test_bench_reports_the_seed_columns(tmp_path):
    tmp = str(tmp_path)
    cfg = recipe(tmp, "b", model="tinynet", image_resize=16, batch_size=8)
    proc = run([sys.executable, tiny_cli(tmp), "bench", "-c", cfg, "--steps", "2", "--json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout[proc.stdout.index("["):])
    assert [r["phase"] for r in rows] == ["train", "infer"]
    for row in rows:
        assert row["batch_size"] == 8 and row["resolution"] == "16x16" and row["params_M"] >= 0
        assert row["workers"] == 1
        assert row["compile_s"] >= 0 and row["ms_per_step"] > 0
        assert row["img_per_s"] == pytest.approx(8000.0 / row["ms_per_step"])
    table = run([sys.executable, tiny_cli(tmp), "bench", "-c", cfg, "--steps", "1", "--phase", "infer"])
    assert table.returncode == 0 and "graph compile" in table.stdout and "| infer" in table.stdout


def test_progress_bar_shows_loss_lr_and_throughput(tmp_path):
    tmp = str(tmp_path)
    cfg = recipe(tmp, "p", model="tinynet", image_resize=16, epoch_size=1, decay_epochs=1, val_while_train=False)
    proc = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg, "--progress", "bar"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 1/1" in proc.stderr and "loss=" in proc.stderr and "lr=" in proc.stderr and "img_s=" in proc.stderr
    assert "3/3" in proc.stderr


def test_plugins_section_reaches_the_registry(tmp_path):
    """A recipe that blocks the plugin providing its model cannot build it: the block list was applied."""
    cfg = recipe(str(tmp_path), "pl", plugins={"block": ["googlenet"]})
    started = time.time()
    proc = run(["mindplug", "train", "-c", cfg])
    _fails_fast(proc, started, "googlenet")
    allowed = recipe(str(tmp_path), "pl2", plugins={"prefer": {"googlenet": "googlenet"}}, epoch_size=1,
                     decay_epochs=1, num_samples=16, val_while_train=False)
    proc = run(["mindplug", "train", "-c", allowed])
    assert proc.returncode == 0, proc.stderr[-2000:]
