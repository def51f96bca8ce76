"""Nothing lost, nothing silently wrong: a bad-input corpus, every failure class through the CLI (one
``error:`` line, exit code 2, no traceback), class names by name, and crashes injected at every write point."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from test_engine import recipe, run, tiny_cli  # noqa: E402  (tests/ is on sys.path under pytest)

from mindplug import DataError


# ---------------------------------------------------------------- the bad-input corpus

def write_corpus(folder: Path) -> Dict[str, Path]:
    """One file per kind of awkward or broken input a user's data can hold."""
    folder.mkdir(parents=True, exist_ok=True)
    files: Dict[str, Path] = {}
    yy, xx = np.mgrid[0:40, 0:48]  # smooth, so JPEG keeps it close: colour conversions can be compared
    good = np.stack([xx * 5, yy * 6, (xx + yy) * 3], axis=2).astype(np.uint8)
    Image.fromarray(good).save(folder / "good.jpg", quality=95)
    files["good"] = folder / "good.jpg"
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    files["truncated"] = folder / "truncated.jpg"
    (folder / "empty.png").write_bytes(b"")
    files["empty"] = folder / "empty.png"
    (folder / "not_an_image.png").write_text("hello")
    files["text"] = folder / "not_an_image.png"
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))  # a full-range 16-bit gradient
    Image.fromarray(ramp).save(folder / "ramp16.png")
    files["16bit"] = folder / "ramp16.png"
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    files["cmyk"] = folder / "cmyk.jpg"
    palette = Image.fromarray(good).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.save(folder / "palette.png", transparency=0)
    files["palette"] = folder / "palette.png"
    Image.fromarray(good[:, :, 0]).convert("LA").save(folder / "gray_alpha.png")
    files["la"] = folder / "gray_alpha.png"
    Image.new("L", (15000, 15000)).save(folder / "huge.png")  # 225 Mpx: Pillow's decompression-bomb limit
    files["huge"] = folder / "huge.png"
    (folder / "bad.yaml").write_text("lr: [1, 2\nmodel: googlenet\n")
    files["yaml"] = folder / "bad.yaml"
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_image_modes_are_converted_not_clipped(corpus):
    from mindplug._images import read_image

    ramp = read_image(str(corpus["16bit"]))
    assert ramp.dtype == np.uint8 and ramp.shape == (16, 64, 1)
    assert ramp[0, 0, 0] == 0 and ramp[0, -1, 0] == 255 and abs(float(ramp.mean()) - 127.5) < 2  # not 98% white
    source = np.asarray(Image.open(corpus["good"]).convert("RGB"))
    cmyk = read_image(str(corpus["cmyk"]))
    assert cmyk.shape == source.shape and np.abs(cmyk.astype(int) - source).mean() < 12
    assert read_image(str(corpus["palette"])).shape == (40, 48, 3)
    assert read_image(str(corpus["la"])).shape == (40, 48, 1)
    assert read_image(str(corpus["good"]), channels=1).shape == (40, 48, 1)
    for name in ("truncated", "empty", "text", "huge"):
        with pytest.raises(DataError, match=f"cannot decode image {corpus[name]}"):
            read_image(str(corpus[name]))


def _folder(root: Path, layout: Dict[str, Dict[str, List[Path]]]) -> Path:
    """data_dir/<split>/<class>/<files> from corpus files."""
    for split, classes in layout.items():
        for klass, files in classes.items():
            (root / split / klass).mkdir(parents=True, exist_ok=True)
            for i, path in enumerate(files):
                (root / split / klass / f"{i}_{path.name}").write_bytes(path.read_bytes())
    return root


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stdout[-1500:] + proc.stderr[-2500:]
    assert len(errors) == 1, proc.stderr[-2500:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2500:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def test_every_failure_class_is_one_error_line(corpus, tmp_path):
    good = [corpus["good"]] * 6
    data = _folder(tmp_path / "data", {"train": {"a": good, "b": good}, "val": {"a": good[:2], "b": good[:2]}})
    base = dict(dataset="image_folder", data_dir=str(data), num_samples=None, batch_size=2, image_resize=32,
                in_channels=3, epoch_size=1, decay_epochs=1, val_while_train=False)

    # a truncated image met in the middle of an epoch: the file, the option's syntax, the state saved
    bad = _folder(tmp_path / "bad", {"train": {"a": good + [corpus["truncated"]], "b": good}})
    cfg = recipe(str(tmp_path), "t1", **{**base, "data_dir": str(bad), "shuffle": False})
    line = _one_error_line(run(["mindplug", "train", "-c", cfg]), str(bad / "train" / "a"), "--dataset.on_error skip",
                           "state saved to")
    assert "continue with --resume" in line
    skipped = run(["mindplug", "train", "-c", cfg, "--dataset.on_error", "skip", "--overwrite", "True"])
    assert skipped.returncode == 0, skipped.stderr[-2000:]

    # a 0-byte image in the validation split of a checkpoint being validated
    empty = _folder(tmp_path / "empty", {"val": {"a": [corpus["empty"], corpus["good"]], "b": good[:2]}})
    trained = recipe(str(tmp_path), "t2", **base)
    assert run(["mindplug", "train", "-c", trained]).returncode == 0
    ckpt = str(tmp_path / "t2" / "googlenet-1_6.ckpt")
    _one_error_line(run(["mindplug", "validate", "-c", trained, "--data_dir", str(empty), "--ckpt_path", ckpt]),
                    "empty (0 bytes)")

    # an existing run is never replaced silently, and its files stay as they were
    before = (tmp_path / "t2" / "googlenet-1_6.ckpt").read_bytes()
    _one_error_line(run(["mindplug", "train", "-c", trained]), "already holds a run", "--resume True",
                    "--overwrite True")
    assert (tmp_path / "t2" / "googlenet-1_6.ckpt").read_bytes() == before

    # unwritable output folders, found before any training
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _one_error_line(run(["mindplug", "train", "-c", trained, "--ckpt_save_dir", str(blocker / "run")]),
                    "cannot write to ckpt_save_dir")
    state_blocked = tmp_path / "run_state"
    state_blocked.mkdir()
    (state_blocked / "state").write_text("a file where the state folder goes")
    _one_error_line(run(["mindplug", "train", "-c", trained, "--ckpt_save_dir", str(state_blocked)]),
                    "cannot write to the train-state folder")

    # an empty class folder is named, not counted as a class
    hollow = _folder(tmp_path / "hollow", {"train": {"a": good, "b": good}})
    (hollow / "train" / "c").mkdir()
    _one_error_line(run(["mindplug", "train", "-c", recipe(str(tmp_path), "t3", **{**base, "data_dir": str(hollow)})]),
                    str(hollow / "train" / "c"))

    # a validation class the network was not trained on
    alien = _folder(tmp_path / "alien", {"val": {"a": good[:2], "zebra": good[:2]}})
    _one_error_line(run(["mindplug", "validate", "-c", trained, "--data_dir", str(alien), "--ckpt_path", ckpt]),
                    "zebra")

    # command-line and recipe mistakes
    _one_error_line(run(["mindplug", "bench", "-c", trained, "--steps", "abc"]), "--steps")
    _one_error_line(run(["mindplug", "bench", "-c", trained, "--steps", "0"]), "at least 1")
    _one_error_line(run(["mindplug", "list", "modles"]), "did you mean 'models'")
    _one_error_line(run(["mindplug", "train", "-c", str(corpus["yaml"])]), "not valid YAML")
    _one_error_line(run(["mindplug", "predict", "--ckpt_path", ckpt, str(corpus["huge"])]), "huge.png")


def test_check_data_lists_every_unreadable_file(corpus, tmp_path):
    good = [corpus["good"]] * 3
    data = _folder(tmp_path / "data", {"train": {"a": good + [corpus["truncated"], corpus["text"]], "b": good},
                                       "val": {"a": [corpus["empty"]] + good, "b": good}})
    cfg = recipe(str(tmp_path), "c", dataset="image_folder", data_dir=str(data), num_samples=None, in_channels=3)
    proc = run(["mindplug", "check-data", "-c", cfg])
    _one_error_line(proc, "3 unreadable image(s)")
    listed = [line for line in proc.stderr.splitlines() if line.startswith("unreadable: ")]
    assert len(listed) == 3 and all("cannot decode image" in line for line in listed)
    assert "split 'train' of dataset 'datasets:image_folder': 6 of 8 images readable" in proc.stdout
    clean = _folder(tmp_path / "clean", {"train": {"a": good}, "val": {"a": good}})
    assert run(["mindplug", "check-data", "-c", cfg, "--data_dir", str(clean)]).returncode == 0


def test_channels_follow_the_network_whatever_the_dataset(corpus, tmp_path):
    """The Fashion-MNIST recipe (in_channels 1) on a folder of RGB images: converted, not a kernel error."""
    good = [corpus["good"]] * 4
    data = _folder(tmp_path / "rgb", {"train": {"a": good, "b": good}, "val": {"a": good[:2], "b": good[:2]}})
    root = Path(__file__).resolve().parents[1]
    proc = run(["mindplug", "train", "-c", str(root / "configs" / "googlenet" / "googlenet_fashion_mnist.yaml"),
                "--dataset", "image_folder", "--data_dir", str(data), "--num_classes", "2", "--epoch_size", "1",
                "--batch_size", "4", "--scheduler", "constant", "--ckpt_save_dir", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_validation_classes_are_matched_by_name(corpus, tmp_path):
    import mindplug
    from mindplug.engine.data import align_classes

    good = [corpus["good"]] * 2
    data = _folder(tmp_path / "d", {"train": {"a": good, "b": good, "c": good}, "val": {"a": good, "c": good}})
    train = mindplug.create("image_folder", kind="dataset", data_dir=str(data), split="train")
    val = align_classes(mindplug.create("image_folder", kind="dataset", data_dir=str(data), split="val"),
                        train.class_names, "validation")
    assert val.class_names == ["a", "b", "c"] and val.num_classes == 3
    assert [val[i][1] for i in range(len(val))] == [0, 0, 2, 2]  # 'c' keeps label 2, not 1


# ---------------------------------------------------------------- crashes at every write point

FAULT_POINTS = ["weights:2", "best:1", "best.commit:1", "state:2", "state.after:2", "log:4", "config:1",
                "classes:1", "runtime:1"]


def _tiny(tmp: str, name: str) -> str:
    return recipe(tmp, name, model="tinynet", image_resize=16, num_samples=48, batch_size=8, epoch_size=3,
                  decay_epochs=3, val_while_train=True, keep_checkpoint_max=1, progress="none")


def _weights(path: str) -> Dict[str, np.ndarray]:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items() if not isinstance(v, str)}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> str:
    tmp = str(tmp_path_factory.mktemp("faults"))
    proc = run([sys.executable, tiny_cli(tmp), "train", "-c", _tiny(tmp, "clean")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return os.path.join(tmp, "clean")


@pytest.mark.slow
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_crash_at_any_write_point_resumes_to_the_same_run(clean_run, tmp_path, point):
    tmp = str(tmp_path)
    cfg = _tiny(tmp, "r")
    folder = os.path.join(tmp, "r")
    crashed = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg], env={"MINDPLUG_FAULT": point})
    assert crashed.returncode == -9, (point, crashed.stdout[-1500:], crashed.stderr[-1500:])
    if not os.path.isdir(os.path.join(folder, "state")) or not os.listdir(os.path.join(folder, "state")):
        again = ["--overwrite", "True"]  # killed before the first state: nothing to resume, start over
    else:
        again = ["--resume", "True"]
    resumed = run([sys.executable, tiny_cli(tmp), "train", "-c", cfg, *again])
    assert resumed.returncode == 0, (point, resumed.stdout[-1500:], resumed.stderr[-2000:])
    for name in ("tinynet-3_6.ckpt", "tinynet-best.ckpt", "state/tinynet-3_6.ckpt"):
        mine, theirs = _weights(os.path.join(folder, name)), _weights(os.path.join(clean_run, name))
        assert mine.keys() == theirs.keys(), (point, name)
        for key in mine:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{point} {name} {key}")
    with open(os.path.join(folder, "log.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    assert [row["epoch"] for row in history] == [1, 2, 3], point
    leftovers = [n for d in (folder, os.path.join(folder, "state")) for n in os.listdir(d)
                 if ".tmp-" in n or n.endswith(".next.ckpt")]
    assert not leftovers, (point, leftovers)


def test_a_damaged_newest_state_names_the_older_good_one(clean_run, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(clean_run, folder)
    state = folder / "state"
    older = state / "tinynet-2_6.ckpt"
    shutil.copy(state / "tinynet-3_6.ckpt", older)  # a readable older state
    newest = state / "tinynet-3_6.ckpt"
    newest.write_bytes(newest.read_bytes()[:2000])
    cfg = _tiny(str(tmp_path), "copy")
    proc = run([sys.executable, tiny_cli(str(tmp_path)), "train", "-c", cfg, "--resume", "True"])
    _one_error_line(proc, str(newest), f"--resume {older}")
