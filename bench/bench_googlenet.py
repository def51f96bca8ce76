"""GoogLeNet on this CPU: mindplug kernels vs MindSpore native vs PyTorch, inference and training.

Each configuration runs in its own subprocess (so peak RSS is its own), GRAPH mode for MindSpore:

    python bench/bench_googlenet.py                      # everything, batch 32 (native: batch 8, 1 step)
    python bench/bench_googlenet.py --only kernels       # just our kernels
    python bench/bench_googlenet.py --profile [--precision bfloat16]   # per-kernel time of every layer (ctypes)
    python bench/bench_googlenet.py --image-size 32 --in-channels 1 --num-classes 10 --batch 128 \
        --only kernels torch --tasks train               # the Fashion-MNIST recipe's shape

Training step = forward + backward + SGD momentum update, loss = cross-entropy with label smoothing 0.1.
MindSpore native is ~20 s per batch-8 inference step here, so it runs a smaller batch and fewer steps
(printed next to its numbers); img/s normalises the batch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

# GoogLeNet (paper layout, 5x5 branch, no BN, no conv bias): Inception(in, c1, c3r, c3, c5r, c5, pool_proj)
INCEPTION = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64), "pool",
             (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64), (512, 128, 128, 256, 24, 64, 64),
             (512, 112, 144, 288, 32, 64, 64), (528, 256, 160, 320, 32, 128, 128), "pool2",
             (832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)]


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(step, steps: int) -> Dict[str, float]:
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"first_s": first, "step_s": times[len(times) // 2]}


# ---------------------------------------------------------------- MindSpore (kernels or native)
def run_mindspore(task: str, batch: int, steps: int, threads: int, shape: tuple) -> Dict[str, float]:
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    if threads:
        ms.set_context(runtime_num_threads=threads)
    import mindplug

    size, channels, classes = shape
    ms.set_seed(0)
    net = mindplug.create("googlenet", num_classes=classes, in_channels=channels)
    out = timed(mindspore_step(net, task, batch, channels, size, classes, label_smoothing=0.1), steps)
    from mindplug.ops import _library

    out["gemm"] = _library.gemm_backend() if _library.available() else "-"
    return out


def mindspore_step(net, task: str, batch: int, channels: int, size: int, classes: int,
                   label_smoothing: float = 0.0):
    """One inference or SGD training step of ``net`` on fixed random data, as a callable that waits for
    the result (the step every MindSpore-side bench times)."""
    import numpy as np
    from mindspore import Tensor, nn

    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, channels, size, size)).astype(np.float32))
    y = Tensor(rng.integers(0, classes, batch).astype(np.int32))
    if task == "infer":
        net.set_train(False)
        return lambda: net(x).asnumpy()
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)
    train = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss(label_smoothing=label_smoothing)), opt)
    train.set_train(True)
    return lambda: train(x, y).asnumpy()


# ---------------------------------------------------------------- PyTorch, same architecture
def torch_googlenet(in_channels: int = 3, num_classes: int = 1000):
    import math

    import torch
    from torch import nn

    def same_pad(k: int, s: int):
        """MindSpore/TF 'same': pad (total // 2, total - total // 2) for the actual input size."""
        def pad(x):
            h, w = x.shape[-2:]
            ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
            pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
            return ph, pw
        return pad

    class ConvReLU(nn.Module):
        def __init__(self, cin, cout, k, s=1):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2 if s == 1 else 0, bias=False)
            self.k, self.s = k, s

        def forward(self, x):
            if self.s != 1:
                ph, pw = same_pad(self.k, self.s)(x)
                x = nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            return torch.relu(self.conv(x))

    class Pool(nn.Module):
        def __init__(self, k, s):
            super().__init__()
            self.k, self.s = k, s

        def forward(self, x):
            ph, pw = same_pad(self.k, self.s)(x)
            x = nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float("-inf"))
            return nn.functional.max_pool2d(x, self.k, self.s)

    class Inception(nn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
            super().__init__()
            self.b1 = ConvReLU(cin, c1, 1)
            self.b2 = nn.Sequential(ConvReLU(cin, c3r, 1), ConvReLU(c3r, c3, 3))
            self.b3 = nn.Sequential(ConvReLU(cin, c5r, 1), ConvReLU(c5r, c5, 5))
            self.b4 = nn.Sequential(Pool(3, 1), ConvReLU(cin, cp, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    layers = [ConvReLU(in_channels, 64, 7, 2), Pool(3, 2), ConvReLU(64, 64, 1), ConvReLU(64, 192, 3), Pool(3, 2)]
    for cfg in INCEPTION:
        layers.append(Pool(3, 2) if cfg == "pool" else Pool(2, 2) if cfg == "pool2" else Inception(*cfg))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1024, num_classes))


def run_torch(task: str, batch: int, steps: int, threads: int, shape: tuple) -> Dict[str, float]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    size, channels, classes = shape
    torch.manual_seed(0)
    net = torch_googlenet(channels, classes)
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, classes, (batch,))
    if task == "infer":
        net.eval()

        def step():
            with torch.no_grad():
                net(x)
    else:
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            opt.step()
    out = timed(step, steps)
    out["gemm"] = f"torch {torch.__version__}"
    return out


# ---------------------------------------------------------------- per-kernel profile (ctypes, no graph)
def profile(batch: int, repeats: int, size: int = 224, in_channels: int = 3, precision: str = "float32") -> None:
    """Time every GoogLeNet layer's kernels at size x size to show where a step's time goes."""
    import numpy as np

    from mindplug.ops import _library

    _library.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    precision = _library.set_precision(precision)
    rng = np.random.default_rng(0)

    def t(entry, inputs, outs):
        """Best of `repeats` runs into reused outputs (MindSpore's pool reuses memory too)."""
        arrays = _library.call(entry, inputs, outs)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            _library.call(entry, inputs, outs, out=arrays)
            best = min(best, time.perf_counter() - t0)
        return best * 1e3

    rows: List[tuple] = []

    def conv(name, cin, cout, k, s):
        nonlocal size
        x = rng.standard_normal((batch, cin, size, size), np.float32)
        w = (rng.standard_normal((cout, cin, k, k)) * 0.05).astype(np.float32)
        cfg = np.array([s, s, 0, 0, 0, 0, 1, 1], np.int64)
        o = -(-size // s)
        fwd = t("Conv2dForward", [x, w, cfg], [(batch, cout, o, o)])
        (y,) = _library.call("Conv2dForward", [x, w, cfg], [(batch, cout, o, o)])
        bwd = t("Conv2dBackwardFilter", [y, y, x, w, cfg], [w.shape])
        if name != "conv1":  # GRAPH mode drops the input layer's input gradient
            bwd += t("Conv2dBackwardData", [y, y, x, w, cfg], [x.shape])
        rows.append((name, f"{cin}->{cout} {k}x{k}/{s} @{size}", fwd, bwd, 2 * batch * o * o * cout * cin * k * k))
        size = o

    def pool(name, k, s):
        nonlocal size
        x = rng.standard_normal((batch, channels, size, size), np.float32)
        cfg = np.array([k, k, s, s, 0, 0, 0, 0, 1], np.int64)
        o = -(-size // s)
        fwd = t("MaxPoolForward", [x, cfg], [(batch, channels, o, o)])
        (y,) = _library.call("MaxPoolForward", [x, cfg], [(batch, channels, o, o)])
        bwd = t("MaxPoolBackward", [y, x, y, cfg], [x.shape])
        rows.append((name, f"{channels}ch {k}x{k}/{s} @{size}", fwd, bwd, 0))
        size = o

    channels = 64
    conv("conv1", in_channels, 64, 7, 2)
    pool("maxpool1", 3, 2)
    conv("conv2", 64, 64, 1, 1)
    conv("conv3", 64, 192, 3, 1)
    channels = 192
    pool("maxpool2", 3, 2)
    names = iter(["3a", "3b", "maxpool3", "4a", "4b", "4c", "4d", "4e", "maxpool4", "5a", "5b"])
    for cfg in INCEPTION:
        name = next(names)
        if isinstance(cfg, str):
            pool(name, 3 if cfg == "pool" else 2, 2)
            continue
        cin, c1, c3r, c3, c5r, c5, cp = cfg
        x = np.maximum(rng.standard_normal((batch, cin, size, size)), 0).astype(np.float32)
        ws = [(rng.standard_normal(s) * np.sqrt(2 / np.prod(s[1:]))).astype(np.float32) for s in
              [(c1, cin, 1, 1), (c3r, cin, 1, 1), (c3, c3r, 3, 3), (c5r, cin, 1, 1), (c5, c5r, 5, 5), (cp, cin, 1, 1)]]
        out = (batch, c1 + c3 + c5 + cp, size, size)
        fwd = t("InceptionForward", [x, *ws], [out])
        (y,) = _library.call("InceptionForward", [x, *ws], [out])
        bwd = t("InceptionBackward", [y, y, x, *ws], [x.shape] + [w.shape for w in ws])
        macs = size * size * (cin * (c1 + c3r + c5r + cp) + c3r * c3 * 9 + c5r * c5 * 25)
        rows.append(("inception" + name, f"{cin}->{out[1]} @{size}", fwd, bwd, 2 * batch * macs))
        channels = out[1]
    total_f = sum(r[2] for r in rows)
    total_b = sum(r[3] for r in rows)
    print(f"per-kernel profile, batch {batch}, GEMM {_library.gemm_backend()} in {precision}, "
          f"{_library.load().MindplugGetNumThreads()} threads (ms; GFLOP/s of the forward)")
    print(f"{'layer':<14}{'shape':<26}{'fwd ms':>9}{'bwd ms':>9}{'fwd GF/s':>10}{'fwd %':>7}{'bwd %':>7}")
    for name, shape, f, b, flops in rows:
        gf = f"{flops / f / 1e6:.0f}" if flops else "-"
        print(f"{name:<14}{shape:<26}{f:9.1f}{b:9.1f}{gf:>10}{100 * f / total_f:7.1f}{100 * b / total_b:7.1f}")
    print(f"{'total':<40}{total_f:9.1f}{total_b:9.1f}   -> kernels alone: {batch / total_f * 1e3:.1f} img/s "
          f"inference, {batch / (total_f + total_b) * 1e3:.1f} img/s training (fwd + bwd)")


# ---------------------------------------------------------------- driver
CONFIGS = {  # name -> (runner, env)
    "kernels": ("mindspore", {"MINDPLUG_KERNELS": "kernels"}),
    "native": ("mindspore", {"MINDPLUG_KERNELS": "native"}),
    "torch": ("torch", {}),
}


def worker(args) -> None:
    runner = run_torch if args.worker_runner == "torch" else run_mindspore
    out = runner(args.worker_task, args.worker_batch, args.worker_steps, args.threads,
                 (args.image_size, args.in_channels, args.num_classes))
    out["rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out))


def run_config(name: str, task: str, args) -> Dict | None:
    """One configuration in a fresh subprocess; None when it cannot run."""
    runner, env = CONFIGS[name]
    if runner == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            print(f"  {name:<8} {task}: skipped (torch not installed)")
            return None
    batch, steps = (args.native_batch, args.native_steps) if name == "native" else (args.batch, args.steps)
    cmd = [sys.executable, __file__, "--worker-runner", runner, "--worker-task", task,
           "--worker-batch", str(batch), "--worker-steps", str(steps), "--threads", str(args.threads),
           "--image-size", str(args.image_size), "--in-channels", str(args.in_channels),
           "--num-classes", str(args.num_classes)]
    return run_worker(cmd, env, f"{name} {task}", batch, steps)


def run_worker(cmd: List[str], env: Dict[str, str], label: str, batch: int, steps: int) -> Dict | None:
    """Runs one measuring subprocess (its own RSS, no shared caches) and reads its RESULT line."""
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        print(f"  {label} failed:\n{proc.stderr[-3000:]}")
        return None
    r = json.loads(line[-1][7:])
    r.update(batch=batch, steps=steps, img_s=batch / r["step_s"])
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps after the first (median reported)")
    p.add_argument("--image-size", type=int, default=224, help="square input side in pixels")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--native-batch", type=int, default=8)
    p.add_argument("--native-steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="0 = all cores the process may use")
    p.add_argument("--only", nargs="*", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    p.add_argument("--tasks", nargs="*", choices=["infer", "train"], default=["infer", "train"])
    p.add_argument("--rounds", type=int, default=1,
                   help="run every configuration this many times, alternating, and keep each one's best round "
                        "(a shared machine's noise then hurts every configuration alike)")
    p.add_argument("--profile", action="store_true", help="per-kernel profile instead of the comparison")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="the kernels' GEMM precision for --profile")
    p.add_argument("--worker-runner", help=argparse.SUPPRESS)
    p.add_argument("--worker-task", help=argparse.SUPPRESS)
    p.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_runner:
        return worker(args)
    if args.profile:
        return profile(args.batch, max(1, args.steps // 2), args.image_size, args.in_channels, args.precision)
    results: Dict[tuple, Dict] = {}
    print(f"GoogLeNet {args.image_size}x{args.image_size}, {args.in_channels} input channel(s), {args.num_classes} "
          f"classes, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, cores {len(os.sched_getaffinity(0))}, "
          f"{args.rounds} round(s)")
    for round_ in range(args.rounds):
        for task in args.tasks:
            for name in args.only:
                if name == "native" and round_ > 0:
                    continue  # ~20 s a step: once is enough to see a 100x gap
                r = run_config(name, task, args)
                if r is None:
                    continue
                print(f"  [{round_ + 1}] {name:<8} {task:<5} batch {r['batch']:>3} x {r['steps']} steps: "
                      f"{r['img_s']:8.2f} img/s  step {r['step_s'] * 1e3:9.1f} ms  first step {r['first_s']:7.2f} s  "
                      f"peak RSS {r['rss_mb']:7.0f} MB  [{r['gemm']}]", flush=True)
                if (name, task) not in results or r["img_s"] > results[name, task]["img_s"]:
                    results[name, task] = r
    if args.rounds > 1:
        print("\nbest round of each:")
        for (name, task), r in sorted(results.items()):
            print(f"  {name:<8} {task:<5} {r['img_s']:8.2f} img/s  peak RSS {r['rss_mb']:7.0f} MB")
    print("\nratios (img/s):")
    for task in args.tasks:
        k = results.get(("kernels", task))
        for other in ("torch", "native"):
            o = results.get((other, task))
            if k and o:
                print(f"  {task:<5} kernels / {other:<6} = {k['img_s'] / o['img_s']:7.2f}x   "
                      f"peak RSS kernels / {other} = {k['rss_mb'] / o['rss_mb']:.2f}")
    for name, task in sorted(results):
        if name != "torch":
            r = results[name, task]
            print(f"  first step {name} {task}: {r['first_s']:.1f} s = graph compile ~{r['first_s'] - r['step_s']:.1f} s "
                  f"+ one step (reference system: 113 s graph compile)")


if __name__ == "__main__":
    main()
