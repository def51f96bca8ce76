"""Any network on the kernels: MindCV models through mindplug.ops.accelerate vs MindSpore native vs the same
architecture in plain PyTorch, inference and a training step, 224x224 by default. Run by hand:

    python bench/bench_models.py                                  # resnet18 resnet50 mobilenet_v2, both tasks
    python bench/bench_models.py --models resnet18 --only kernels torch --rounds 2
    python bench/bench_models.py --models resnet18 --profile      # per-layer time of our kernels (PYNATIVE)
    python bench/bench_models.py --models googlenet --mode pynative --image-size 32 --in-channels 1 \
        --num-classes 10 --batch 128 --only kernels               # PYNATIVE vs GRAPH
    python bench/bench_models.py --models googlenet --precision bfloat16 --rounds 2   # vs torch bf16 autocast

Every configuration runs in its own subprocess (its own peak RSS, no shared caches), back to back, so the
ratios compare runs made minutes apart on the same machine. Training step = forward + backward + SGD
momentum, cross-entropy loss; BatchNorm in training mode. MindSpore native convolutions larger than 1x1 are
about 1 GFLOP/s here, so native runs a small batch for one step (printed with its numbers).
The PyTorch peers are written out here (torchvision does not load with torch 2.13 on this machine); their
layer shapes follow MindCV 0.3.0's definitions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_googlenet import mindspore_step, peak_rss_mb, run_worker, timed  # noqa: E402  (one step, timing, RSS)
MINDCV = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenet_v2": "mobilenet_v2_100",
          "resnet34": "resnet34", "resnet101": "resnet101", "resnext50": "resnext50_32x4d",
          "mobilenet_v3": "mobilenet_v3_large_100", "densenet121": "densenet121", "vgg16": "vgg16"}


# ---------------------------------------------------------------- MindSpore: kernels (accelerate) or native
def build_mindspore(model: str, channels: int, classes: int):
    if model == "googlenet":
        import mindplug

        return mindplug.create("googlenet", num_classes=classes, in_channels=channels)
    import mindcv

    return mindcv.create_model(MINDCV.get(model, model), num_classes=classes, in_channels=channels)


def run_mindspore(model: str, task: str, batch: int, steps: int, threads: int, shape: tuple, mode: str,
                  precision: str = "float32") -> Dict:
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    if threads:
        ms.set_context(runtime_num_threads=threads)
    import mindplug.ops as mo
    from mindplug.ops import _library

    size, channels, classes = shape
    effective = _library.set_precision(precision) if _library.available() else "float32"
    ms.set_seed(0)
    net = build_mindspore(model, channels, classes)
    mo.accelerate(net)  # a no-op under MINDPLUG_KERNELS=native
    summary = mo.summary(net)
    out = timed(mindspore_step(net, task, batch, channels, size, classes), steps)
    out["layers"] = f"{summary.kernel_layers}/{summary.total} on kernels, {effective}"
    return out


# ---------------------------------------------------------------- PyTorch peers (MindCV's layer shapes)
def torch_model(model: str, channels: int, classes: int):
    from torch import nn

    def conv_bn(cin, cout, k, s, p, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        return nn.Sequential(*layers)

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, c, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            self.relu = nn.ReLU(inplace=True)
            self.down = None if stride == 1 and cin == c else nn.Sequential(
                nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            identity = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, c, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
            self.conv3, self.bn3 = nn.Conv2d(c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c)
            self.relu = nn.ReLU(inplace=True)
            self.down = None if stride == 1 and cin == 4 * c else nn.Sequential(
                nn.Conv2d(cin, 4 * c, 1, stride, bias=False), nn.BatchNorm2d(4 * c))

        def forward(self, x):
            identity = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    def resnet(block, layers):
        mods = [nn.Conv2d(channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for i, n in enumerate(layers):
            for j in range(n):
                mods.append(block(cin, 64 * 2 ** i, 2 if (j == 0 and i > 0) else 1))
                cin = 64 * 2 ** i * block.expansion
        return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [] if t == 1 else [conv_bn(cin, hidden, 1, 1, 0, act=nn.ReLU6)]
            layers += [conv_bn(hidden, hidden, 3, stride, 1, groups=hidden, act=nn.ReLU6),
                       conv_bn(hidden, cout, 1, 1, 0, act=None)]
            self.layers, self.residual = nn.Sequential(*layers), stride == 1 and cin == cout

        def forward(self, x):
            return x + self.layers(x) if self.residual else self.layers(x)

    def mobilenet_v2():
        mods, cin = [conv_bn(channels, 32, 3, 2, 1, act=nn.ReLU6)], 32
        for t, c, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                           [6, 160, 3, 2], [6, 320, 1, 1]]:
            for i in range(n):
                mods.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        mods.append(conv_bn(cin, 1280, 1, 1, 0, act=nn.ReLU6))
        return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, classes))

    if model == "resnet18":
        return resnet(Basic, [2, 2, 2, 2])
    if model == "resnet34":
        return resnet(Basic, [3, 4, 6, 3])
    if model == "resnet50":
        return resnet(Bottleneck, [3, 4, 6, 3])
    if model == "resnet101":
        return resnet(Bottleneck, [3, 4, 23, 3])
    if model == "mobilenet_v2":
        return mobilenet_v2()
    if model == "googlenet":
        from bench_googlenet import torch_googlenet

        return torch_googlenet(channels, classes)
    raise SystemExit(f"no PyTorch peer written for {model}")


def run_torch(model: str, task: str, batch: int, steps: int, threads: int, shape: tuple, mode: str,
              precision: str = "float32") -> Dict:
    import contextlib

    import torch

    if threads:
        torch.set_num_threads(threads)
    size, channels, classes = shape
    torch.manual_seed(0)
    net = torch_model(model, channels, classes)
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, classes, (batch,))

    def autocast():
        if precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    if task == "infer":
        net.eval()

        def step():
            with torch.no_grad(), autocast():
                net(x)
    else:
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
    out = timed(step, steps)
    out["layers"] = f"torch {torch.__version__}, {precision}{' autocast' if precision != 'float32' else ''}"
    return out


# ---------------------------------------------------------------- per-layer profile of the kernels
def profile(model: str, batch: int, size: int, channels: int, classes: int, repeats: int) -> None:
    """Every kernel-backed layer's kernels timed alone through ctypes (no graph), on the activations the
    network really produces: forward and backward in training mode (BatchNorm with batch statistics) and
    the forward in inference mode (BatchNorm folded into the conv before it)."""
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    import mindplug.ops as mo
    from mindplug.ops import _library
    from mindplug.ops import layers as L

    ms.set_seed(0)
    net = build_mindspore(model, channels, classes)
    mo.accelerate(net)
    kinds = (L.Conv2d, L.BatchNorm2d, L.MaxPool2d, L.AvgPool2d)
    layers = [(n, c) for n, c in net.cells_and_names() if isinstance(c, kinds) and c._mp_reason is None]
    seen = {}

    def recorder(cell, args, _out):
        seen.setdefault(id(cell), args[0].asnumpy())

    handles = [c.register_forward_hook(recorder) for _, c in layers]
    net.set_train(True)
    net(Tensor(np.random.default_rng(0).standard_normal((batch, channels, size, size)).astype(np.float32)))
    for h in handles:
        h.remove()

    def t(entry, inputs, shapes):
        outs = _library.call(entry, inputs, shapes)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            _library.call(entry, inputs, shapes, out=outs)
            best = min(best, time.perf_counter() - t0)
        return best * 1e3, outs

    def params(*ps):
        return [p.asnumpy() for p in ps]

    rows = []
    for name, cell in layers:
        x = seen.get(id(cell))
        if x is None:
            continue
        if isinstance(cell, L.Conv2d):
            w = params(cell.weight) + (params(cell.bias) if cell.has_bias else [])
            cfg = cell._mp_cfg.asnumpy()
            oh, ow = cell._mp_geo.out_hw(x.shape[2], x.shape[3])
            yshape = (x.shape[0], cell.out_channels, oh, ow)
            fwd, (y,) = t("ConvForward", [cfg, x, *w], [yshape])
            shapes = [w[0].shape] + [(cell.out_channels,)] * (len(w) - 1)
            bwd = t("ConvBackwardFilter", [cfg, y, y, x, *w], shapes)[0]
            if name != layers[0][0]:  # GRAPH mode drops the input layer's input gradient
                bwd += t("ConvBackwardData", [cfg, y, y, x, *w], [x.shape])[0]
            infer = fwd
            if cell._mp_has_bn:
                bn = cell._mp_bn
                extra = params(bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
                infer = t("ConvForward", [cell._mp_cfg_fold.asnumpy(), x, *w, *extra], [yshape])[0]
            flops = 2 * x.shape[0] * oh * ow * cell.out_channels * w[0][0].size
            kind = f"conv {cell.kernel_size[0]}x{cell.kernel_size[1]}/{cell.stride[0]} g{cell.group}"
        elif isinstance(cell, L.BatchNorm2d):
            p = params(cell.gamma, cell.beta, cell.moving_mean, cell.moving_variance)
            cfg = cell._mp_cfg.asnumpy()
            c = (x.shape[1],)
            fwd, (y, mean, invstd, _, _) = t("BatchNormTrain", [cfg, x, *p], [x.shape, c, c, c, c])
            bwd = t("BatchNormTrainBackward", [cfg, y, x, y, p[0], p[1], mean, invstd], [x.shape, c, c])[0]
            infer = 0.0 if cell._mp_folded else t("BatchNormInfer", [cfg, x, *p], [x.shape])[0]
            flops, kind = 0, "batchnorm" + (f"+act{cell._mp_act}" if cell._mp_act else "")
        else:
            cfg = cell._mp_cfg.asnumpy()
            oh, ow = cell._mp_geo.out_hw(x.shape[2], x.shape[3])
            fwd, (y,) = t("PoolForward", [cfg, x], [(x.shape[0], x.shape[1], oh, ow)])
            bwd = t("PoolBackward", [cfg, y, x, y], [x.shape])[0]
            infer, flops, kind = fwd, 0, "avgpool" if cell._mp_geo.avg else "maxpool"
        rows.append((name, kind, tuple(x.shape[1:]), infer, fwd, bwd, flops))
    print(f"per-kernel profile, {model} {size}x{size} batch {batch}, {_library.load().MindplugGetNumThreads()} "
          f"threads, GEMM {_library.gemm_backend()} (ms; GFLOP/s of the training forward)")
    print(f"{'layer':<28}{'kind':<18}{'input CxHxW':<16}{'infer':>8}{'fwd':>8}{'bwd':>8}{'GF/s':>7}")
    for name, kind, shape, infer, fwd, bwd, flops in rows:
        gf = f"{flops / fwd / 1e6:.0f}" if flops else "-"
        print(f"{name:<28}{kind:<18}{'x'.join(map(str, shape)):<16}{infer:8.2f}{fwd:8.2f}{bwd:8.2f}{gf:>7}")
    i, f, b = (sum(r[k] for r in rows) for k in (3, 4, 5))
    print(f"{'total':<62}{i:8.1f}{f:8.1f}{b:8.1f}   -> kernels alone: {batch / i * 1e3:.1f} img/s inference, "
          f"{batch / (f + b) * 1e3:.1f} img/s training (fwd + bwd)")


# ---------------------------------------------------------------- driver
CONFIGS = {"kernels": ("mindspore", {"MINDPLUG_KERNELS": "kernels"}),
           "native": ("mindspore", {"MINDPLUG_KERNELS": "native"}),
           "torch": ("torch", {})}


def worker(args) -> None:
    runner = run_torch if args.worker_runner == "torch" else run_mindspore
    out = runner(args.worker_model, args.worker_task, args.worker_batch, args.worker_steps, args.threads,
                 (args.image_size, args.in_channels, args.num_classes), args.mode, args.precision)
    out["rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out))


def run_config(model: str, name: str, task: str, args) -> Dict | None:
    runner, env = CONFIGS[name]
    batch, steps = (args.native_batch, args.native_steps) if name == "native" else (args.batch, args.steps)
    cmd = [sys.executable, __file__, "--worker-runner", runner, "--worker-model", model, "--worker-task", task,
           "--worker-batch", str(batch), "--worker-steps", str(steps), "--threads", str(args.threads),
           "--image-size", str(args.image_size), "--in-channels", str(args.in_channels),
           "--num-classes", str(args.num_classes), "--mode", args.mode, "--precision", args.precision]
    return run_worker(cmd, env, f"{model} {name} {task}", batch, steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["resnet18", "resnet50", "mobilenet_v2"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="timed steps after the first (median reported)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--native-batch", type=int, default=2)
    p.add_argument("--native-steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="0 = all cores the process may use")
    p.add_argument("--mode", choices=["graph", "pynative"], default="graph")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: mindplug's bf16 GEMMs (amp_level O2) against torch.autocast('cpu', bfloat16)")
    p.add_argument("--only", nargs="*", choices=sorted(CONFIGS), default=["kernels", "torch"])
    p.add_argument("--tasks", nargs="*", choices=["infer", "train"], default=["infer", "train"])
    p.add_argument("--rounds", type=int, default=1, help="alternate the configurations this many times and "
                   "keep each one's best round (machine noise then hurts all alike)")
    p.add_argument("--profile", action="store_true", help="per-layer kernel profile instead of the comparison")
    p.add_argument("--worker-runner", help=argparse.SUPPRESS)
    p.add_argument("--worker-model", help=argparse.SUPPRESS)
    p.add_argument("--worker-task", help=argparse.SUPPRESS)
    p.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_runner:
        return worker(args)
    if args.profile:
        for model in args.models:
            profile(model, args.batch, args.image_size, args.in_channels, args.num_classes, max(2, args.steps))
        return
    print(f"{args.image_size}x{args.image_size}, {args.mode.upper()}, {args.precision}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
          f"cores {len(os.sched_getaffinity(0))}, {args.rounds} round(s)")
    results: Dict[tuple, Dict] = {}
    for round_ in range(args.rounds):
        for model in args.models:
            for task in args.tasks:
                for name in args.only:
                    if name == "native" and round_ > 0:
                        continue
                    r = run_config(model, name, task, args)
                    if r is None:
                        continue
                    print(f"  [{round_ + 1}] {model:<13} {name:<8} {task:<5} batch {r['batch']:>3}: "
                          f"{r['img_s']:8.2f} img/s  step {r['step_s'] * 1e3:8.1f} ms  first {r['first_s']:6.1f} s  "
                          f"RSS {r['rss_mb']:6.0f} MB  [{r['layers']}]", flush=True)
                    key = (model, name, task)
                    if key not in results or r["img_s"] > results[key]["img_s"]:
                        results[key] = r
    print("\nbest of each (img/s) and ratios:")
    lines: List[str] = []
    for model in args.models:
        for task in args.tasks:
            k, t, n = (results.get((model, c, task)) for c in ("kernels", "torch", "native"))
            row = f"  {model:<13} {task:<5}"
            for label, r in (("kernels", k), ("torch", t), ("native", n)):
                row += f"  {label} {r['img_s']:7.2f}" if r else f"  {label}      -"
            if k and t:
                row += f"  kernels/torch {k['img_s'] / t['img_s']:5.2f}x"
            if k and n:
                row += f"  kernels/native {k['img_s'] / n['img_s']:6.1f}x"
            lines.append(row)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
