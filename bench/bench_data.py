"""Data pipeline throughput: mindplug against MindCV 0.3.0, and Fashion-MNIST training with and without data.

    python bench/bench_data.py                       # everything, about 20 minutes on 2 cores
    python bench/bench_data.py --skip-fmnist         # the JPEG folder only
    python bench/bench_data.py --fmnist-samples 12800 --repeat 1   # a shorter training run

1. JPEG ImageNet folder: ``--images`` JPEGs of 500x375 (quality 90, generated with Pillow into a temporary
   directory in the ImageNet layout), read with the seed recipe's training pipeline (random resized crop to
   224, flip, normalise, batch 32), with colour jitter 0.4 (``--jitter seed``: MindCV's default, which the
   recipe does not override, so mindplug and MindCV's train.py both apply it) and without (``none``), for
   each worker count in ``--workers``, on three sides:
   - mindplug: what ``mindplug bench -c configs/googlenet/googlenet_ascend.yaml --data_dir DIR --phase data``
     runs (``data_bench_job`` + ``measure_data``), with the same warm-up as the other sides;
   - python_path: the same pipeline as mindplug built it before the fast paths (``make_feed(fast=False)``:
     Pillow decoding in threads);
   - MindCV 0.3.0 as its training script builds it: ``create_dataset`` + ``create_transforms`` +
     ``create_loader`` with the same settings (``pip install --no-deps mindcv==0.3.0 tqdm``).
   Each side runs in its own process, ``--warmup`` batches first, then ``--batches`` timed batches; the
   sides alternate and the median of ``--repeat`` rounds is reported.
2. Fashion-MNIST recipe (``configs/googlenet/googlenet_fashion_mnist.yaml``): ``mindplug bench --phase
   train`` (the training step on synthetic data) and one training epoch of ``--fmnist-samples`` images
   with its data (``mindplug train``, the epoch's img/s from ``log.json``: compile and pipeline start-up
   included, as in every epoch of a run), alternated; then ``mindplug bench --phase data`` (the pipeline
   alone).

The figures go to bench/RESULTS.md by hand; a quiet machine matters (the pipeline and the network share the
same cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_RECIPE = os.path.join(ROOT, "configs", "googlenet", "googlenet_ascend.yaml")
FMNIST_RECIPE = os.path.join(ROOT, "configs", "googlenet", "googlenet_fashion_mnist.yaml")
#: the seed recipe's training pipeline settings (googlenet_ascend.yaml); color_jitter is not in the recipe,
#: so MindCV's default (0.4) applies, in mindplug as in MindCV's train.py; ``--color_jitter 0`` leaves it out
SEED = {"image_resize": 224, "scale": (0.08, 1.0), "ratio": (0.75, 1.333), "hflip": 0.5,
        "interpolation": "bilinear", "batch_size": 32}
JITTER = {"seed": 0.4, "none": 0.0}


def make_jpeg_folder(root: str, count: int, classes: int = 10, size: tuple = (500, 375), seed: int = 0) -> None:
    """``root/train/class_XX/img_NNNNN.JPEG``: smooth colour fields with noise, about 110 KB each at quality
    90, near the size of an ImageNet training JPEG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(count):
        folder = os.path.join(root, "train", f"class_{index % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        fx, fy, phase = rng.uniform(10, 60, 3)
        base = np.dstack([np.sin(xx / fx + phase) * 100 + 120, np.cos(yy / fy) * 100 + 120,
                          ((xx + yy) * rng.uniform(0.2, 1.0)) % 256])
        image = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"img_{index:05d}.JPEG"), quality=90)


def _time_batches(batches, warmup: int, count: int, batch: int) -> float:
    """img/s over ``count`` batches after ``warmup`` ones."""
    seen, began = 0, 0.0
    for _ in batches:
        seen += 1
        if seen == warmup:
            began = time.perf_counter()
        if seen == warmup + count:
            return batch * count / (time.perf_counter() - began)
    raise RuntimeError(f"the pipeline ended after {seen} batches; need {warmup + count}")


def side_mindcv(folder: str, workers: int, warmup: int, count: int, jitter: float) -> float:
    """MindCV 0.3.0's ImageNet training pipeline, built as its train.py builds it."""
    from mindcv.data import create_dataset, create_loader, create_transforms

    dataset = create_dataset(name="imagenet", root=folder, split="train", shuffle=True,
                             num_parallel_workers=workers)
    transform = create_transforms(dataset_name="imagenet", image_resize=SEED["image_resize"], is_training=True,
                                  scale=SEED["scale"], ratio=SEED["ratio"], hflip=SEED["hflip"],
                                  interpolation=SEED["interpolation"], color_jitter=jitter or None)
    loader = create_loader(dataset=dataset, batch_size=SEED["batch_size"], drop_remainder=True, is_training=True,
                           transform=transform, num_parallel_workers=workers)
    iterator = loader.create_tuple_iterator(num_epochs=-1, output_numpy=True)  # epochs run on, as in MindCV

    def epochs():
        while True:
            yield from iterator  # one epoch per pass over the iterator

    return _time_batches(epochs(), warmup, count, SEED["batch_size"])


def side_python_path(folder: str, workers: int, warmup: int, count: int, jitter: float) -> float:
    """The seed recipe's training pipeline through mindplug's Python path (Pillow decode in threads)."""
    import mindplug
    from mindplug._data import make_feed
    from mindplug._transforms import build_transforms
    from mindplug.engine.runtime import epoch_seed

    source = mindplug.create("imagenet", kind="dataset", data_dir=folder, split="train")
    keys = {k: v for k, v in SEED.items() if k != "batch_size"}
    ops = build_transforms({**keys, "in_channels": 3, "color_jitter": jitter}, is_training=True)

    def epochs():
        epoch = 0
        while True:
            yield from make_feed(source, shuffle=True, seed=epoch_seed(0, epoch), transforms=ops,
                                 batch_size=SEED["batch_size"], drop_remainder=True, num_parallel_workers=workers,
                                 channels=3, fast=False).batches()
            epoch += 1

    return _time_batches(epochs(), warmup, count, SEED["batch_size"])


def _mindplug(args: List[str], timeout: float = 3600) -> subprocess.CompletedProcess:
    env = dict(os.environ, GLOG_v="3", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "mindplug", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"mindplug {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def _bench_json(args: List[str]) -> Dict:
    out = _mindplug(["bench", *args, "--json"]).stdout
    return json.loads(out[out.index("["):])[0]


def side_mindplug(folder: str, workers: int, warmup: int, count: int, jitter: float) -> float:
    """What ``mindplug bench -c googlenet_ascend.yaml --data_dir DIR --phase data --steps COUNT`` runs, with
    the other sides' warm-up."""
    from mindplug.engine.bench import measure_data
    from mindplug.engine.jobs import data_bench_job
    from mindplug.engine.recipe import load_recipe

    recipe = load_recipe(SEED_RECIPE, [("data_dir", folder), ("num_parallel_workers", str(workers)),
                                       ("color_jitter", str(jitter))])
    row = measure_data(data_bench_job(recipe), steps=count, warmup=warmup)[0]
    assert row["path"] == "files", row
    return float(row["img_per_s"])


def _side(name: str, folder: str, workers: int, warmup: int, count: int, jitter: float) -> float:
    """One measurement in a fresh process."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import bench_data; "
            f"print('IMG_PER_S', bench_data.side_{name}({folder!r}, {workers}, {warmup}, {count}, {jitter}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, GLOG_v="3"), timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("IMG_PER_S")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def bench_jpeg(args: argparse.Namespace) -> List[str]:
    with tempfile.TemporaryDirectory(prefix="mindplug-bench-jpeg-") as folder:
        start = time.perf_counter()
        make_jpeg_folder(folder, args.images)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
        lines = [f"JPEG folder: {args.images} images of 500x375, {size / args.images / 1024:.0f} KB each on "
                 f"average (generated in {time.perf_counter() - start:.0f} s); seed recipe's training pipeline, "
                 f"batch 32, {args.warmup} warm-up + {args.batches} timed batches, median of {args.repeat}"]
        sides = ["mindplug", "mindcv"] + ([] if args.skip_python_path else ["python_path"])
        for name in args.jitter:
            jitter = JITTER[name]
            lines.append(f"color_jitter {jitter} ({'the seed recipe as read: MindCV default' if jitter else 'none'})")
            lines.append("| workers | " + " | ".join(f"{s} img/s" for s in sides) + " | mindplug / mindcv |")
            lines.append("|---" * (len(sides) + 2) + "|")
            for workers in args.workers:
                results: Dict[str, List[float]] = {s: [] for s in sides}
                for _ in range(args.repeat):
                    for side in sides:
                        results[side].append(_side(side, folder, workers, args.warmup, args.batches, jitter))
                        print(f"  jitter {jitter} workers {workers} {side}: {results[side][-1]:.1f} img/s", flush=True)
                median = {s: statistics.median(v) for s, v in results.items()}
                lines.append(f"| {workers} | " + " | ".join(f"{median[s]:.1f}" for s in sides)
                             + f" | {median['mindplug'] / median['mindcv']:.2f}x |")
    return lines


def bench_fmnist(args: argparse.Namespace) -> List[str]:
    """Synthetic step and a training epoch with data, alternated ``--repeat`` times (medians), so a change in
    the machine's load hits both sides alike."""
    synthetic, epochs, loads = [], [], []
    for _ in range(args.repeat):
        extra = args.fmnist_args.split()
        row = _bench_json(["-c", FMNIST_RECIPE, "--phase", "train", "--steps", "40", *extra])
        synthetic.append(float(row["img_per_s"]))
        with tempfile.TemporaryDirectory(prefix="mindplug-bench-fmnist-") as folder:
            _mindplug(["train", "-c", FMNIST_RECIPE, "--epoch_size", "1", "--val_while_train", "False",
                       "--num_samples", str(args.fmnist_samples), "--ckpt_save_dir", folder, "--progress", "log",
                       "--log_interval", "100000", *extra])
            with open(os.path.join(folder, "log.json"), encoding="utf-8") as handle:
                epochs.append(float(json.load(handle)[-1]["img_per_s"]))
        loads.append(os.getloadavg()[0])
        print(f"  fashion-mnist: synthetic {synthetic[-1]:.1f} img/s, epoch with data {epochs[-1]:.1f} img/s "
              f"(load {loads[-1]:.2f})", flush=True)
    data_alone = _bench_json(["-c", FMNIST_RECIPE, "--phase", "data", "--steps", "100", *args.fmnist_args.split()])
    with_data, step = statistics.median(epochs), statistics.median(synthetic)
    return [f"Fashion-MNIST recipe{' ' + args.fmnist_args if args.fmnist_args else ''}, batch {row['batch_size']}, "
            f"{row['resolution']}, {row.get('precision', 'float32')}, {args.fmnist_samples} training "
            f"images per epoch, median of {args.repeat} alternated rounds (load average after each: "
            f"{', '.join(f'{v:.2f}' for v in loads)}):",
            "| measurement | img/s |", "|---|---|",
            f"| training step, synthetic data (`mindplug bench --phase train --steps 40`) | {step:.1f} |",
            f"| training epoch with its data (`mindplug train`, log.json; graph compile included, as in every "
            f"epoch) | {with_data:.1f} |",
            f"| the data pipeline alone (`mindplug bench --phase data --steps 100`, {data_alone['path']} path) | "
            f"{data_alone['img_per_s']:.1f} |",
            f"| with data / synthetic | {with_data / step:.1%} |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1600, help="JPEGs in the generated folder")
    parser.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    parser.add_argument("--warmup", type=int, default=3, help="batches before the timing starts; more than "
                        "one epoch (--images / 32) times a later epoch, whose unchanged files skip the check")
    parser.add_argument("--batches", type=int, default=40, help="timed batches of 32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jitter", type=lambda s: s.split(","), default=["seed", "none"],
                        help="pipelines: 'seed' (color_jitter 0.4, the recipe as read), 'none' (no colour jitter)")
    parser.add_argument("--fmnist-samples", type=int, default=60000, help="training images in the timed epoch")
    parser.add_argument("--skip-fmnist", action="store_true")
    parser.add_argument("--fmnist-args", default="", help="recipe overrides for the Fashion-MNIST part, e.g. "
                                                          "'--amp_level O2 --val_amp_level O2' (bf16)")
    parser.add_argument("--skip-jpeg", action="store_true")
    parser.add_argument("--skip-python-path", action="store_true", help="leave out the Pillow path")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from mindplug import _jpeg_batches

    lines = [f"bench_data.py, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
             f"load average at start {load:.2f}; mindplug decodes JPEG folders with "
             f"{'its JPEG batches (libjpeg-turbo)' if _jpeg_batches.available() else 'MindSpore ops'}"]
    if not args.skip_jpeg:
        lines += bench_jpeg(args) + [""]
    if not args.skip_fmnist:
        lines += bench_fmnist(args)
    lines.append(f"load average at end {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
