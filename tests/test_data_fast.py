"""The data fast paths against the Python path they replace: image files decoded by MindSpore's C++ ops and
array-backed sources read row by row give the same images and labels in the same order for a seed (shards,
epochs, resumed positions); augmentation statistics match; a bad file is one error naming it, or skipped,
whichever path met it; malformed JPEGs never reach the C++ decoder; Python transforms run in worker
processes; ``bench --phase data`` measures the recipe's real pipeline."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mindplug
from mindplug import DataError
from mindplug import _fast_sources, _jpeg_batches
from mindplug._data import make_feed
from mindplug._image_headers import cpp_decodable
from mindplug._map_stages import resolve_hints, split_stages, usable_cpus
from mindplug._transforms import build_transforms

CLASSES = ("ant", "bee", "cow")
RAW = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # the default pipeline, ending in raw 0..255 values


def colour_of(index: int) -> tuple:
    """A solid colour that survives JPEG and any crop, so a row can be identified after augmentation."""
    return 8 * (index % 30) + 8, 8 * (index // 30) + 8, 100


def index_of(image_chw: np.ndarray) -> int:
    red, green = (float(np.median(image_chw[c])) for c in (0, 1))
    return int(round((red - 8) / 8)) + 30 * int(round((green - 8) / 8))


@pytest.fixture
def solid_tree(tmp_path: Path) -> Path:
    """train/<class>/*.jpg: 45 solid-colour JPEGs of different sizes (index = position in sorted order)."""
    index = 0
    for name in CLASSES:
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        for k in range(15):
            size = (20 + 3 * k, 24 + (index % 7))
            Image.new("RGB", size, colour_of(index)).save(folder / f"{k:02d}.jpg", quality=95)
            index += 1
    return tmp_path


def folder(root: Path, **kwargs):
    return mindplug.create("image_folder", kind="dataset", data_dir=str(root), split="train", **kwargs)


def rows_of(feed) -> list:
    """(image index, label) of every row, in order."""
    out = []
    for images, labels in feed.batches():
        out += [(index_of(image), int(label)) for image, label in zip(images, labels)]
    return out


def both_paths(source, **options) -> tuple:
    fast = make_feed(source, fast=True, **options)
    slow = make_feed(source, fast=False, **options)
    return fast, slow


# ---------------------------------------------------------------- image files: same order, shards, epochs

@pytest.mark.parametrize("seed,shards,equal,epoch", [(0, 1, False, 0), (7, 1, False, 3), (5, 2, True, 1),
                                                     (5, 3, False, 0)])
def test_files_path_gives_the_python_paths_rows_in_order(solid_tree, seed, shards, equal, epoch):
    src = folder(solid_tree)
    ops = build_transforms({"image_resize": 12, "in_channels": 3, **RAW}, is_training=True)
    expected_labels = [label for _, label in src.samples]
    parts = []
    for shard in range(shards):
        fast, slow = both_paths(src, shuffle=True, seed=seed, num_shards=shards, shard_id=shard, transforms=ops,
                                batch_size=4, equal_shards=equal, start_epoch=epoch, channels=3,
                                num_parallel_workers=2)
        assert (fast.path, slow.path) == ("files", "python")
        rows = rows_of(fast)
        assert rows == rows_of(slow)                                      # image by image, label by label
        assert [i for i, _ in rows] == fast.order.tolist()
        assert all(label == expected_labels[i] for i, label in rows)
        again = make_feed(src, shuffle=True, seed=seed, num_shards=shards, shard_id=shard, transforms=ops,
                          batch_size=4, equal_shards=equal, start_epoch=epoch + 1, channels=3)
        assert rows_of(again) == rows_of(make_feed(src, fast=False, shuffle=True, seed=seed, num_shards=shards,
                                                   shard_id=shard, transforms=ops, batch_size=4,
                                                   equal_shards=equal, start_epoch=epoch + 1, channels=3))
        assert [i for i, _ in rows_of(again)] != [i for i, _ in rows]    # another epoch, another order
        parts.append([i for i, _ in rows])
    flat = [i for part in parts for i in part]
    assert set(flat) == set(range(len(src)))
    if not equal:
        assert sorted(flat) == list(range(len(src)))                      # disjoint, full cover


def test_resumed_epoch_continues_at_the_same_batch(solid_tree):
    """The trainer skips the batches a resumed epoch already trained on: those after them are the ones the
    uninterrupted epoch has there, and a pipeline rebuilt at a row offset starts exactly there."""
    src = folder(solid_tree)
    ops = build_transforms({"image_resize": 12, "in_channels": 3, **RAW}, is_training=True)
    options = dict(shuffle=True, seed=3, transforms=ops, batch_size=4, channels=3, start_epoch=2)
    whole = rows_of(make_feed(src, **options))
    resumed = [[index_of(image) for image in images] for images, _ in make_feed(src, **options).batches()]
    assert [i for batch in resumed[5:] for i in batch] == [i for i, _ in whole[20:]]
    rebuilt = make_feed(src, **options).rebuild(20)
    tail = [index_of(image) for images, _ in rebuilt.create_tuple_iterator(num_epochs=1, output_numpy=True)
            for image in images]
    assert tail == [i for i, _ in whole[20:]]


def test_eval_pixels_equal_the_python_paths(tmp_path):
    """Decoded by MindSpore or by Pillow, a JPEG, a PNG and a BMP give the same evaluation tensors."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:90, 0:120]
    base = np.dstack([xx * 2, yy * 2, (xx + yy) % 256]).astype(np.float64)
    for k, ext in enumerate(("jpg", "png", "bmp", "jpeg")):
        image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = tmp_path / "train" / CLASSES[k % 3] / f"x{k}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    src = folder(tmp_path)
    ops = build_transforms({"image_resize": 32, "in_channels": 3, "crop_pct": 0.875}, is_training=False)
    fast, slow = both_paths(src, shuffle=False, seed=0, transforms=ops, batch_size=2, channels=3)
    assert fast.path == "files"
    a = np.concatenate([x for x, _ in fast.batches()])
    b = np.concatenate([x for x, _ in slow.batches()])
    np.testing.assert_array_equal(a, b)


def _unusual_images(root: Path) -> None:
    """Files the C++ decoder is not given (16-bit PNG, CMYK JPEG, TIFF, WebP, GIF, palette with
    transparency) next to ones it is (grey JPEG, grey+alpha PNG)."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    grey16 = (rng.integers(0, 65536, (20, 24))).astype(np.uint16)
    target = root / "train" / "ant"
    target.mkdir(parents=True)
    Image.fromarray(grey16).save(target / "a16.png")
    Image.fromarray(rgb).convert("CMYK").save(target / "b_cmyk.jpg")
    Image.fromarray(rgb).save(target / "c.tiff")
    Image.fromarray(rgb).save(target / "d.webp", lossless=True)
    Image.fromarray(rgb).quantize(16).save(target / "e.gif")
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = 3
    palette.save(target / "f_pal.png", transparency=3)
    Image.fromarray(rgb[:, :, 0]).save(target / "g_grey.jpg", quality=95)
    Image.fromarray(np.dstack([rgb[:, :, 0], rgb[:, :, 1]]), "LA").save(target / "h_la.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_unusual_files_go_through_the_source_with_the_same_result(tmp_path, channels):
    _unusual_images(tmp_path)
    src = folder(tmp_path)
    raw = [{"type": "resize", "size": [20, 24]},
           {"type": "normalize", "mean": [0.0] * channels, "std": [1.0] * channels, "channels": channels}]
    ops = build_transforms({"transforms": {"eval": raw}, "in_channels": channels}, is_training=False)
    fast, slow = both_paths(src, shuffle=False, seed=0, transforms=ops, batch_size=8, channels=channels)
    assert fast.path == "files"
    a = np.concatenate([x for x, _ in fast.batches()])
    b = np.concatenate([x for x, _ in slow.batches()])
    assert a.shape == b.shape == (8, channels, 20, 24)
    diff = np.abs(a - b)
    # colour to grey: MindSpore's weights differ from Pillow's in the last bit of a few pixels
    assert diff.max() <= (1.0 if channels == 1 else 0.0) and (diff > 0).mean() < 0.01


def test_pillows_size_limit_holds_on_the_fast_path(solid_tree, monkeypatch):
    """An image over Pillow's decompression-bomb limit is refused on both paths, not decoded in C++."""
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 200)  # the solid images have 480..1400 pixels
    src = folder(solid_tree)
    feed = make_feed(src, shuffle=False, seed=0, batch_size=4, channels=3)
    with pytest.raises(DataError, match="cannot decode image .*00.jpg"):
        list(feed.batches())


def test_grey_source_on_a_colour_network(solid_tree):
    src = folder(solid_tree, in_channels=1)
    ops = build_transforms({"image_resize": 12, "in_channels": 3, **RAW}, is_training=False)
    fast, slow = both_paths(src, shuffle=False, seed=0, transforms=ops, batch_size=5, channels=3)
    a = np.concatenate([x for x, _ in fast.batches()])
    b = np.concatenate([x for x, _ in slow.batches()])
    assert np.array_equal(a[:, 0], a[:, 2]) and np.abs(a - b).max() <= 1.0


def test_an_unchanged_file_is_checked_once(solid_tree, monkeypatch):
    calls = []

    def counting(data: bytes) -> bool:
        calls.append(len(data))
        return cpp_decodable(data)

    monkeypatch.setattr(_fast_sources, "cpp_decodable", counting)
    src = folder(solid_tree)
    for epoch in range(2):
        rows_of(make_feed(src, shuffle=True, seed=0, start_epoch=epoch, batch_size=9, channels=3,
                          transforms=build_transforms({"image_resize": 12, "in_channels": 3, **RAW}, is_training=True)))
    assert len(calls) == 45                                   # the second epoch read them unchecked
    changed = solid_tree / "train" / "ant" / "03.jpg"
    _truncated_jpeg(changed)
    os.utime(changed, ns=(1, 1))
    with pytest.raises(DataError, match=f"cannot decode image {re.escape(str(changed))}"):
        rows_of(make_feed(src, shuffle=False, seed=0, batch_size=9, channels=3))
    assert len(calls) == 46


def test_the_pipeline_check_still_runs_on_the_fast_path(solid_tree):
    seen = []
    make_feed(folder(solid_tree), shuffle=False, seed=0, batch_size=4, channels=1, check=seen.append)
    assert len(seen) == 1 and seen[0].shape[2] == 1 and seen[0].dtype == np.uint8


# ---------------------------------------------------------------- bad files, both modes, both paths

def _truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture(params=["checked", "cpp"])
def decoder_meets_bad_files(request, monkeypatch, tmp_path):
    """'checked': the header check sends the bad file to the source; 'cpp': the check is bypassed, so the C++
    decoder itself refuses the file (a truncated JPEG: an error, never a crash) and the pass is retraced."""
    monkeypatch.chdir(tmp_path)  # MindSpore dumps a file it cannot decode to ./abnormal_image.*
    if request.param == "cpp":
        monkeypatch.setattr(_fast_sources, "cpp_decodable", lambda data: True)
    return request.param


def test_bad_file_is_one_error_naming_it(solid_tree, decoder_meets_bad_files):
    bad = solid_tree / "train" / "bee" / "07.jpg"
    _truncated_jpeg(bad)
    src = folder(solid_tree)
    ops = build_transforms({"image_resize": 12, "in_channels": 3, **RAW}, is_training=True)
    feed = make_feed(src, shuffle=True, seed=1, transforms=ops, batch_size=4, channels=3)
    assert feed.path == "files"
    with pytest.raises(DataError, match=f"cannot decode image {re.escape(str(bad))}.*on_error"):
        list(feed.batches())


def test_bad_file_skipped_keeps_the_python_paths_rows(solid_tree, decoder_meets_bad_files, caplog):
    bad = solid_tree / "train" / "bee" / "07.jpg"
    _truncated_jpeg(bad)
    ops = build_transforms({"image_resize": 12, "in_channels": 3, **RAW}, is_training=True)
    options = dict(shuffle=True, seed=4, transforms=ops, batch_size=4, channels=3)
    src = folder(solid_tree, on_error="skip")
    with caplog.at_level(logging.WARNING):
        fast = rows_of(make_feed(src, **options))
    warned = sum(str(bad) in r.getMessage() for r in caplog.records)
    reference = rows_of(make_feed(folder(solid_tree, on_error="skip"), fast=False, **options))
    assert fast == reference and len(fast) == 45
    assert src.skipped == {str(bad)} and warned == 1                   # counted, reported once
    bad_index = [p for p, _ in src.samples].index(str(bad))
    replacement = [i for i, _ in fast if i == bad_index + 1]
    assert len(replacement) == 2                       # served for itself and in the bad file's place
    retraced = bad_index in _fast_sources.python_decoded(src)
    assert retraced == (decoder_meets_bad_files == "cpp")  # refused by C++ mid-pass, or routed up front


def test_a_file_only_pillow_reads_is_decoded_by_the_source(tmp_path, monkeypatch):
    """The C++ decoder refuses WebP; with the check bypassed the pass is retraced and the file decoded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_fast_sources, "cpp_decodable", lambda data: True)
    rng = np.random.default_rng(3)
    target = tmp_path / "train" / "ant"
    target.mkdir(parents=True)
    for k in range(6):
        image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        image.save(target / (f"{k}.webp" if k == 3 else f"{k}.png"), **({"lossless": True} if k == 3 else {}))
    src = folder(tmp_path)
    ops = build_transforms({"transforms": {"eval": [{"type": "normalize", **RAW, "channels": 3}]},
                            "in_channels": 3}, is_training=False)
    fast, slow = both_paths(src, shuffle=False, seed=0, transforms=ops, batch_size=2, channels=3)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in fast.batches()]),
                                  np.concatenate([x for x, _ in slow.batches()]))
    assert 3 in _fast_sources.python_decoded(src)  # later epochs send it to the source directly


# ---------------------------------------------------------------- malformed JPEGs never reach C++

def _jpeg(progressive: bool = False, grey: bool = False) -> bytes:
    yy, xx = np.mgrid[0:64, 0:80]
    image = Image.fromarray(np.dstack([xx * 3, yy * 4, (xx + yy) % 256]).astype(np.uint8))
    buffer = io.BytesIO()
    (image.convert("L") if grey else image).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def _segments(data: bytes) -> dict:
    pos, found = 2, {}
    while True:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        found.setdefault(marker, []).append(pos)
        if marker == 0xDA:
            return found
        pos += 2 + length


def _malformed() -> dict:
    """JPEGs each of which took MindSpore 2.10's decoder down (SIGSEGV / SIGFPE) when tried here."""
    base, prog = bytearray(_jpeg()), bytearray(_jpeg(progressive=True))
    sos = _segments(base)[0xDA][0]
    cases = {}
    c = bytearray(base)
    c[sos + 6] = 0x33
    cases["scan names undefined Huffman tables"] = c
    c = bytearray(base)
    c[sos:sos + 2] = b"\x00\x00"
    cases["no scan header"] = c
    c = bytearray(prog)
    later = prog.find(b"\xff\xda", len(prog) // 2)
    c[later + 4] = 7
    cases["a later scan header is damaged"] = c
    return {k: bytes(v) for k, v in cases.items()}


def test_header_check_accepts_good_files_and_refuses_malformed_ones():
    for progressive in (False, True):
        for grey in (False, True):
            assert cpp_decodable(_jpeg(progressive, grey))
    for name, data in _malformed().items():
        assert not cpp_decodable(data), name
    assert not cpp_decodable(_jpeg()[:-2])                          # no EOI: truncated, Pillow decides


CRASH_PROBE = r"""
import sys, numpy as np, mindspore.dataset.vision as msv
for path in sys.argv[1:]:
    print(path, flush=True)
    for op in (msv.Decode(), msv.RandomCropDecodeResize(16)):
        try:
            op(np.fromfile(path, np.uint8))
        except Exception:
            pass
print("survived", flush=True)
"""


def test_files_that_pass_the_check_do_not_crash_the_decoder(tmp_path):
    """Randomly damaged JPEGs: every one the check lets through is decoded (or refused) by MindSpore
    without taking the process down. Without the check, this corpus kills it."""
    rng = np.random.default_rng(11)
    passed = []
    for k in range(150):
        data = bytearray(_jpeg(progressive=k % 3 == 0, grey=k % 5 == 0))
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(2, min(len(data) - 2, 900)))] = int(rng.integers(0, 256))
        if cpp_decodable(bytes(data)):
            path = tmp_path / f"{k}.jpg"
            path.write_bytes(bytes(data))
            passed.append(str(path))
    assert not any(cpp_decodable(data) for data in _malformed().values())
    assert passed, "the corpus should keep some files the check accepts"
    probe = subprocess.run([sys.executable, "-c", CRASH_PROBE, *passed], capture_output=True, text=True,
                           timeout=300, cwd=str(tmp_path))
    assert probe.returncode == 0 and "survived" in probe.stdout, probe.stdout[-500:]


# ---------------------------------------------------------------- augmentation statistics

def _coordinates_tree(root: Path, copies: int) -> None:
    """One JPEG whose red channel is x and green channel y (scaled), copied: a crop's place, size and
    mirroring can be read off the output."""
    yy, xx = np.mgrid[0:192, 0:256]
    image = np.dstack([xx, np.round(yy * 255 / 191), np.full_like(xx, 128)]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95, subsampling=0)
    target = root / "train" / "ant"
    target.mkdir(parents=True)
    for k in range(copies):
        (target / f"{k:04d}.jpg").write_bytes(buffer.getvalue())


def _crop_stats(feed) -> tuple:
    areas, flips = [], []
    for images, _ in feed.batches():
        for image in images:
            red, green = image[0], image[1]
            width = (red.max() - red.min() + 1) / 256
            height = (green.max() - green.min()) * 191 / 255 / 192 + 1 / 192
            areas.append(width * height)
            flips.append(red[:, 0].mean() > red[:, -1].mean())
    return np.array(areas), np.array(flips)


def test_crop_scale_and_flip_frequencies_match_the_python_path(tmp_path):
    _coordinates_tree(tmp_path, 400)
    src = folder(tmp_path)
    cfg = {"image_resize": 24, "scale": [0.08, 1.0], "hflip": 0.5, "in_channels": 3, **RAW}
    ops = build_transforms(cfg, is_training=True)
    fast, slow = both_paths(src, shuffle=True, seed=9, transforms=ops, batch_size=50, channels=3,
                            num_parallel_workers=2)
    area_fast, flip_fast = _crop_stats(fast)
    area_slow, flip_slow = _crop_stats(slow)
    for flips in (flip_fast, flip_slow):
        assert 0.4 < flips.mean() < 0.6
    assert abs(flip_fast.mean() - flip_slow.mean()) < 0.1
    for areas in (area_fast, area_slow):     # scale (0.08, 1): the crop covers 8%..100% of the image
        assert areas.min() > 0.06 and areas.max() <= 1.01 and 0.4 < areas.mean() < 0.65
    assert abs(area_fast.mean() - area_slow.mean()) < 0.05
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(area_fast, q) - np.quantile(area_slow, q)) < 0.08
    narrow = build_transforms({**cfg, "scale": [0.5, 1.0]}, is_training=True)  # the test can tell scales apart
    area_narrow, _ = _crop_stats(make_feed(src, shuffle=True, seed=9, transforms=narrow, batch_size=50,
                                           channels=3))
    assert area_narrow.mean() - area_fast.mean() > 0.15


# ---------------------------------------------------------------- JPEG folders: the batch decode

needs_jpeg = pytest.mark.skipif(not _jpeg_batches.available(), reason="built without libjpeg-turbo")


def _textured_tree(root: Path, count: int = 24, suffix: str = "jpg") -> None:
    rng = np.random.default_rng(5)
    for k in range(count):
        target = root / "train" / CLASSES[k % 2]
        target.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3), dtype=np.uint8)
        Image.fromarray(image).save(target / f"{k:02d}.{suffix}", **({"quality": 90} if suffix == "jpg" else {}))


def _seed_like(**extra) -> list:
    cfg = {"image_resize": 16, "in_channels": 3, "hflip": 0.5, "color_jitter": 0.4, **RAW, **extra}
    return build_transforms(cfg, is_training=True)


@needs_jpeg
def test_jpeg_folder_batches_repeat_for_a_seed_with_any_worker_count(tmp_path, monkeypatch):
    """Crop, flip and jitter are all drawn per pass and batch: the same seed gives the same batches on one
    worker or two, another seed other crops; the batch decode does the decoding."""
    from mindplug._jpeg_batches import JpegCropBatches

    _textured_tree(tmp_path)
    src = folder(tmp_path)
    calls = []
    decode = JpegCropBatches.decode
    monkeypatch.setattr(JpegCropBatches, "decode", lambda self, files, batch=0: calls.append(batch) or
                        decode(self, files, batch))

    def images(workers: int, seed: int = 3) -> np.ndarray:
        feed = make_feed(src, shuffle=True, seed=seed, transforms=_seed_like(), batch_size=5, channels=3,
                         num_parallel_workers=workers)
        return np.concatenate([x for x, _ in feed.batches()])

    one, two, again = images(1), images(2), images(2)
    assert len(calls) == 3 * 5 and sorted(set(calls)) == [0, 1, 2, 3, 4]
    assert one.shape == (24, 3, 16, 16)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(two, again)
    assert np.abs(images(2, seed=4) - one).mean() > 10


@needs_jpeg
def test_batch_decode_is_taken_only_where_it_serves(tmp_path, monkeypatch):
    from mindplug._data import batch_decoder
    from mindplug._jpeg_batches import JpegCropBatches
    from mindplug._map_stages import decode_steps

    def decoder(ops, samples):
        return batch_decoder(decode_steps(resolve_hints(ops, 3), grey=False, channels=3), samples, 0)

    jpegs = [(f"/data/{k}.JPEG", 0) for k in range(10)]
    pngs = [(f"/data/{k}.png", 0) for k in range(10)]
    assert isinstance(decoder(_seed_like(), jpegs), JpegCropBatches)
    assert decoder(_seed_like(), pngs) is None                                      # MindSpore decodes PNG
    assert decoder(_seed_like(), jpegs[:5] + pngs) is None
    assert decoder(_seed_like(interpolation="nearest"), jpegs) is None               # not a bilinear resize
    assert decoder(_seed_like(auto_augment="randaug-m9-n2-mstd0.5"), jpegs) is None  # a per-image step follows
    assert decoder(build_transforms({"image_resize": 16, "in_channels": 3, **RAW}, is_training=False), jpegs) is None
    monkeypatch.setattr(_jpeg_batches, "available", lambda: False)
    assert decoder(_seed_like(), jpegs) is None
    _textured_tree(tmp_path, 12)                     # without it, MindSpore's RandomCropDecodeResize serves
    feed = make_feed(folder(tmp_path), shuffle=True, seed=1, transforms=_seed_like(), batch_size=4, channels=3)
    assert feed.path == "files" and sum(x.shape[0] for x, _ in feed.batches()) == 12


@needs_jpeg
def test_batch_decode_crops_other_formats_with_pillow_and_refuses_damaged_jpegs():
    from mindplug._jpeg_batches import DecodeError, JpegCropBatches
    from mindplug.ops import _library

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    buffers = {}
    for fmt in ("JPEG", "PNG", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt)
        buffers[fmt] = np.frombuffer(buffer.getvalue(), np.uint8)
    decoder = JpegCropBatches((12, 16), (0.08, 1.0), (0.75, 4 / 3), 10, seed=1)
    images = decoder.decode([buffers["JPEG"], buffers["PNG"], buffers["BMP"]], batch=5)
    draws = decoder.draws(5, 3)
    jpeg, _ = _library.decode_crop_jpegs([buffers["JPEG"]], draws[:1], decoder.scale, decoder.ratio, decoder.size)
    np.testing.assert_array_equal(images[0], jpeg[0])
    for i in (1, 2):
        np.testing.assert_array_equal(images[i], _library.crop_resize_rgb(pixels, draws[i], decoder.scale,
                                                                         decoder.ratio, decoder.size))
    assert not np.array_equal(images[1], images[2])  # each image its own box
    twice = [buffers["JPEG"]] * 2
    np.testing.assert_array_equal(decoder.decode(twice, batch=7), decoder.decode(twice, 7))  # a batch's own draws
    damaged = buffers["JPEG"].copy()
    damaged[len(damaged) // 2:len(damaged) - 2:5] = 0xFF  # markers inside the entropy-coded data
    with pytest.raises(DecodeError, match="image 1 of batch 0"):
        decoder.decode([buffers["JPEG"], damaged])
    with pytest.raises(DecodeError):
        decoder.check(damaged)
    decoder.check(buffers["PNG"])


@needs_jpeg
def test_batch_decode_survives_the_files_that_crashed_mindspores_decoder():
    """libjpeg-turbo refuses or decodes them (no crash), even without the structure check in front."""
    from mindplug._jpeg_batches import DecodeError, JpegCropBatches

    decoder = JpegCropBatches((16, 16), (0.08, 1.0), (0.75, 4 / 3), 10, seed=0)
    rng = np.random.default_rng(11)
    good = _jpeg()
    cases = list(_malformed().values())
    for _ in range(150):
        damaged = bytearray(good)
        for at in rng.integers(3, len(good), int(rng.integers(1, 12))):
            damaged[at] = int(rng.integers(0, 256))
        cases.append(bytes(damaged[: int(rng.integers(len(good) // 2, len(good) + 1))]))
    refused = 0
    for case in cases:
        try:
            assert decoder.decode([np.frombuffer(case, np.uint8)]).shape == (1, 16, 16, 3)
        except DecodeError:
            refused += 1
    assert refused >= 3


# ---------------------------------------------------------------- arrays

def test_array_sources_give_the_python_paths_rows():
    src = mindplug.create("fashion_mnist_sample", kind="dataset", split="val")
    ops = build_transforms({"transforms": {"eval": [{"type": "resize", "size": 32},
                                                    {"type": "normalize", "mean": [72.9], "std": [90.0],
                                                     "channels": 3}]}, "in_channels": 3}, is_training=False)
    for shards, shard in ((1, 0), (3, 2)):
        fast, slow = both_paths(src, shuffle=True, seed=2, num_shards=shards, shard_id=shard, transforms=ops,
                                batch_size=64, channels=3)
        assert (fast.path, slow.path) == ("arrays", "python")
        a, b = list(fast.batches()), list(slow.batches())
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(xa, xb)


def test_engine_wrappers_pass_the_fast_path_on(solid_tree):
    from mindplug.engine.data import Relabeled, Subset

    src = folder(solid_tree)
    subset = Subset(src, 10)
    assert _fast_sources.file_list(subset) == src.samples[:10]
    relabeled = Relabeled(src, ["cow", "bee", "ant"])
    assert [label for _, label in _fast_sources.file_list(relabeled)] == [relabeled[i][1] for i in range(45)]
    arrays = mindplug.create("fashion_mnist_sample", kind="dataset", split="val")
    images, labels = _fast_sources.array_pair(Subset(arrays, 7))
    assert images.shape[0] == 7 and labels.tolist() == [arrays[i][1] for i in range(7)]
    assert _fast_sources.file_list(arrays) is None and _fast_sources.array_pair(src) is None


# ---------------------------------------------------------------- transforms: stages and processes

def test_channel_steps_and_colour_jitter_become_cpp_and_python_steps_get_their_own_stage():
    ops = build_transforms({"image_resize": 16, "in_channels": 3, "color_jitter": 0.4}, is_training=True)
    assert [type(op).__name__ for op in ops] == ["ToRGB", "RandomResizedCrop", "RandomFlip", "ColorJitter",
                                                 "Compose"]
    resolved = resolve_hints(ops, 3)
    # the crop is the pipeline's one random C++ op (MindSpore seeds them all alike); flip and jitter draw their own
    assert [type(op).__name__ for op in resolved] == ["RandomResizedCrop", "RandomFlip", "ColorJitter", "Compose"]
    processes = usable_cpus() > 1
    # the jitter runs in C++ with the GIL released: it stays in the map threads; the Python flip moves out
    assert [(len(s.ops), s.processes) for s in split_stages(resolved)] == [(1, False), (1, processes), (2, False)]
    alone = resolve_hints(build_transforms({"image_resize": 16, "in_channels": 3, "color_jitter": 0.4,
                                            "hflip": 0.0, "transforms": {"train": [
                                                {"type": "resize", "size": 16}, "hflip", "color_jitter",
                                                {"type": "normalize", "channels": 3}]}}, is_training=True), 3)
    assert [type(op).__name__ for op in alone] == ["Resize", "RandomHorizontalFlip", "ColorJitter", "Compose"]
    grey = resolve_hints(build_transforms({"image_resize": 16, "in_channels": 1, "color_jitter": 0.4},
                                          is_training=True), 1)
    assert [type(op).__name__ for op in grey] == ["RandomResizedCrop", "RandomFlip", "ColorJitter",
                                                  "Compose"]                 # grey jitter: ours, in C++ too
    assert [(len(s.ops), s.processes) for s in split_stages(grey)] == [(1, False), (1, processes), (2, False)]
    hue = resolve_hints(build_transforms({"image_resize": 16, "in_channels": 3, "color_jitter": [0.4, 0.4, 0.4, 0.1]},
                                         is_training=True), 3)
    assert [(len(s.ops), s.processes) for s in split_stages(hue)] == [(1, False), (2, processes), (1, False)]
    assert resolve_hints(ops, 1)[0] is ops[0]                                # to_rgb on grey: not a no-op, kept
    policy = build_transforms({"image_resize": 16, "in_channels": 3, "auto_augment": "randaug-m9-n2-mstd0.5"},
                              is_training=True)
    assert type(resolve_hints(policy, 3)[2]).__name__ == "RandAugment"       # Pillow policies stay Python


def test_colour_jitter_statistics_match_pillow():
    """The C++ form of color_jitter draws the same factors in the same random order as the Pillow one."""
    import random

    import mindspore.dataset as ds

    from mindplug.plugins.augmentations._factories import color_jitter

    yy, xx = np.mgrid[0:24, 0:24]
    image = np.clip(np.dstack([xx * 9 + 20, yy * 8 + 30, 200 - xx * 5]), 0, 255).astype(np.uint8)
    jitter = color_jitter(brightness=0.4, contrast=0.4, saturation=0.4)
    (cpp,) = jitter.as_mindspore_ops(3)  # in a pipeline: an eager call redraws the same factors every time
    random.seed(0)
    ds.config.set_seed(0)

    def stats(outputs):
        out = np.stack(outputs).astype(np.float64)
        grey = out.mean(axis=3)
        return np.stack([grey.mean(axis=(1, 2)), grey.std(axis=(1, 2)), out.std(axis=3).mean(axis=(1, 2))], 1)

    pil = stats([jitter(image) for _ in range(1000)])
    rows = ds.NumpySlicesDataset({"image": np.repeat(image[None], 1000, axis=0)}, shuffle=False)
    fast = stats([row[0] for row in rows.map([cpp], "image").create_tuple_iterator(output_numpy=True)])
    for k, name in enumerate(("brightness", "contrast", "saturation")):
        spread = pil[:, k].std()
        assert abs(pil[:, k].mean() - fast[:, k].mean()) < 0.12 * spread, name
        assert abs(pil[:, k].std() - fast[:, k].std()) < 0.12 * spread, name
    # the factors are drawn independently on both sides (MindSpore's random ops share one seed: separate ops
    # would draw equal factors, which shows up here)
    assert np.abs(np.corrcoef(pil.T) - np.corrcoef(fast.T)).max() < 0.12
    assert stats([image])[0, 0] * 0.7 < pil[:, 0].mean() < stats([image])[0, 0] * 1.1


def test_colour_jitter_on_a_batch_matches_pillows_statistics():
    """The batch form of color_jitter (one C++ call per batch, draws from the pass's generator): per image
    the factor spread and the independence of the three steps of the Pillow path, on RGB and grey."""
    import random

    from mindplug.plugins.augmentations._factories import color_jitter

    yy, xx = np.mgrid[0:24, 0:24]
    image = np.clip(np.dstack([xx * 9 + 20, yy * 8 + 30, 200 - xx * 5]), 0, 255).astype(np.uint8)
    jitter = color_jitter(brightness=0.4, contrast=0.4, saturation=0.4)
    assert jitter.on_batch is not None and color_jitter(hue=0.1).on_batch is None  # hue: the per-image step
    random.seed(0)

    def stats(out):
        out = out.astype(np.float64)
        grey = out.mean(axis=3)
        return np.stack([grey.mean(axis=(1, 2)), grey.std(axis=(1, 2)), out.std(axis=3).mean(axis=(1, 2))], 1)

    for picture in (image, image[:, :, :1]):
        pil = stats(np.stack([jitter._in_pillow(picture) for _ in range(1000)]))
        batch = np.repeat(picture[None], 1000, axis=0)
        out = jitter.on_batch(batch, np.random.default_rng(0), threads=2)
        assert out.shape == batch.shape and out.dtype == np.uint8
        fast = stats(out)
        for k in range(2 if picture.shape[2] == 1 else 3):
            spread = pil[:, k].std()
            assert abs(pil[:, k].mean() - fast[:, k].mean()) < 0.12 * spread, k
            assert abs(pil[:, k].std() - fast[:, k].std()) < 0.12 * spread, k
        keep = slice(0, 2) if picture.shape[2] == 1 else slice(0, 3)
        assert np.abs(np.corrcoef(pil[:, keep].T) - np.corrcoef(fast[:, keep].T)).max() < 0.12
    again = jitter.on_batch(np.repeat(image[None], 8, axis=0), np.random.default_rng(5))
    np.testing.assert_array_equal(again, jitter.on_batch(np.repeat(image[None], 8, axis=0),
                                                         np.random.default_rng(5)))  # the generator decides


def test_trailing_per_pixel_steps_run_on_the_batch():
    """Colour jitter and normalisation at the end of a pipeline move to the batch stage (one normalise with
    the layout change), a step without a batch form ends the run, and a hue jitter stays per image."""
    import mindspore.dataset.vision as msv

    from mindplug._map_stages import BatchNormalize, batch_steps, decode_steps, defer_flips, defer_tail

    ops = decode_steps(resolve_hints(build_transforms({"image_resize": 16, "in_channels": 3, "color_jitter": 0.4},
                                                      is_training=True), 3), grey=False, channels=3)
    kept, tail = defer_tail(ops)
    kept, flips = defer_flips(kept)
    assert [type(op).__name__ for op in kept] == ["RandomCropDecodeResize"]
    assert [type(op).__name__ for op in tail] == ["ColorJitter", "Compose"] and flips == [(2, 0.5, True)]
    steps = batch_steps(tail)
    assert steps[0] is tail[0] and isinstance(steps[1], BatchNormalize) and steps[1].chw and len(steps) == 2
    hue = build_transforms({"image_resize": 16, "in_channels": 3, "color_jitter": [0.4, 0.4, 0.4, 0.1]},
                           is_training=True)
    assert [type(op).__name__ for op in defer_tail(hue)[1]] == ["Compose"]
    mixed = [msv.Resize(16), msv.Normalize([0.0], [1.0]), msv.Rescale(2.0, 0.0), msv.HWC2CHW()]
    assert defer_tail(mixed) == (mixed[:3], mixed[3:])


def test_the_batch_stage_gives_the_per_image_pixels(solid_tree):
    """Normalisation and the layout change on the batch give what the per-image steps give: a training feed
    of the files path against its fast=False reference, pixel for pixel (no random step decides here; the
    flip frequencies are checked in test_crop_scale_and_flip_frequencies_match_the_python_path)."""
    src = folder(solid_tree)
    keys = {"image_resize": 12, "in_channels": 3, "hflip": 0.0, "transforms": {"train": [
        {"type": "resize", "size": [12, 12]}, {"type": "normalize", "channels": 3}]}}
    ops = build_transforms(keys, is_training=True)
    fast, slow = both_paths(src, shuffle=True, seed=3, transforms=ops, batch_size=4, channels=3)
    a = np.concatenate([x for x, _ in fast.batches()])
    b = np.concatenate([x for x, _ in slow.batches()])
    assert a.dtype == np.float32 and a.shape[1] == 3
    np.testing.assert_array_equal(a, b)


class RecordProcess:
    """A plugin-style Python transform that notes the process it ran in."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, image: np.ndarray) -> np.ndarray:
        Path(self.folder, str(os.getpid())).touch()
        return image


@pytest.mark.skipif(usable_cpus() < 2, reason="worker processes need 2 CPUs")
def test_python_transforms_run_in_worker_processes(solid_tree, tmp_path):
    import mindspore.dataset.vision as msv

    marks = tmp_path / "pids"
    marks.mkdir()
    src = folder(solid_tree)
    ops = [msv.RandomResizedCrop(12), RecordProcess(str(marks)), msv.HWC2CHW()]
    rows = rows_of(make_feed(src, shuffle=True, seed=0, transforms=ops, batch_size=9, num_parallel_workers=2,
                             channels=3))
    assert sorted(i for i, _ in rows) == list(range(45))
    pids = {int(p.name) for p in marks.iterdir()}
    assert pids and os.getpid() not in pids


# ---------------------------------------------------------------- bench --phase data

def _bench(argv, capsys) -> dict:
    from mindplug.engine.cli import run

    assert run("bench", argv) == 0
    return json.loads(capsys.readouterr().out)[0]


def test_bench_data_phase_reads_the_recipes_pipeline(solid_tree, tmp_path, capsys):
    import yaml

    sample = Path(__file__).resolve().parents[1] / "configs" / "googlenet" / "googlenet_fashion_mnist_sample.yaml"
    row = _bench(["-c", str(sample), "--phase", "data", "--steps",
                  "3", "--json"], capsys)
    assert row["phase"] == "data" and row["path"] == "arrays" and row["img_per_s"] > 0
    assert row["resolution"] == "32x32" and row["batch_size"] == 64
    recipe = tmp_path / "folder.yaml"
    recipe.write_text(yaml.safe_dump({"dataset": "image_folder", "data_dir": str(solid_tree), "image_resize": 16,
                                      "batch_size": 8, "num_classes": 3, "num_parallel_workers": 2}))
    row = _bench(["-c", str(recipe), "--phase", "data", "--steps", "6", "--json"], capsys)
    assert row["path"] == "files" and row["resolution"] == "16x16" and row["img_per_s"] > 0
    assert row["decoder"] == ("JPEG batches" if _jpeg_batches.available() else "MindSpore ops")
    assert row["decoder"] in row["kernel_layers"]
