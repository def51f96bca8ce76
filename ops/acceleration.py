"""``accelerate(net)``: put any MindSpore network's supported layers on the C++ kernels, in place.

Works on any Cell tree (a MindCV model, a plugin's model, a notebook's model): every ``nn.Conv2d``,
``nn.BatchNorm2d``, ``nn.MaxPool2d`` and ``nn.AvgPool2d`` whose class is exactly the nn one becomes the
mindplug subclass of it (the same object: Parameters, names, checkpoints and containers are untouched),
and provable conv -> BatchNorm -> activation chains are fused (see ``_fusion``). Layers it cannot serve stay
native and are listed, with the reason, by ``summary(net)``. A no-op when the device target is not CPU,
when the library is not built, under ``MINDPLUG_KERNELS=native`` or inside ``_dispatch.native()``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from mindspore import nn

from mindplug.ops import _dispatch, _fusion, _library
from mindplug.ops import layers as L

__all__ = ["accelerate", "summary", "Summary"]

#: nn class -> the mindplug class an instance becomes
SWAPS = {nn.Conv2d: L.Conv2d, nn.BatchNorm2d: L.BatchNorm2d, nn.MaxPool2d: L.MaxPool2d, nn.AvgPool2d: L.AvgPool2d}
_KERNEL_CLASSES = tuple(SWAPS.values())
_HOOKS = ("_lazy_forward_pre_hook", "_lazy_forward_hook", "_lazy_backward_pre_hook", "_lazy_backward_hook",
          "_lazy_forward_pre_hook_with_kwargs", "_lazy_forward_hook_with_kwargs", "_cell_backward_pre_hook",
          "_cell_backward_hook")


def _blocks() -> tuple:
    """mindplug's own fused blocks (they choose kernels or native when built; accelerate leaves them be)."""
    from mindplug.ops.blocks import ConvReLU, Inception, MaxPoolSame

    return ConvReLU, Inception, MaxPoolSame


def _has_hooks(cell: nn.Cell) -> bool:
    return any(getattr(cell, name, None) for name in _HOOKS)


def _walk(root: nn.Cell) -> Iterator[Tuple[str, nn.Cell]]:
    """(path, cell) for every distinct cell, not descending into mindplug's blocks."""
    blocks = _blocks()
    seen = set()
    stack = [("", root)]
    while stack:
        path, cell = stack.pop()
        if id(cell) in seen:
            continue
        seen.add(id(cell))
        yield path, cell
        if isinstance(cell, blocks):
            continue
        kids = [(f"{path}.{n}" if path else n, c) for n, c in cell._cells.items() if c is not None]
        stack.extend(reversed(kids))


def _kind(cell: nn.Cell) -> Optional[str]:
    """The chain kind of a cell accelerate may still fuse: exactly the nn class, no hooks."""
    if _has_hooks(cell):
        return None
    if type(cell) is nn.Conv2d:
        return "conv"
    if type(cell) is nn.BatchNorm2d:
        return "bn"
    if L.activation_code(cell) is not None:
        return "act"
    return None


def _compatible(a: nn.Cell, b: nn.Cell) -> bool:
    if type(a) is nn.Conv2d and type(b) is nn.BatchNorm2d:
        return int(a.out_channels) == int(b.num_features)
    return True


def _note(cell: nn.Cell, reason: str) -> None:
    object.__setattr__(cell, "_mp_skip_reason", reason)


def accelerate(net: nn.Cell) -> nn.Cell:
    """Swaps `net`'s supported layers for kernel-backed ones in place and fuses provable chains; returns
    `net`. Idempotent. Call it before compiling or wrapping the network (the compile caches of the cells
    in `net` are invalidated; a wrapper Cell built earlier around `net` is outside its reach)."""
    if _dispatch.why_native(_library.LAYER_ENTRIES) is not None:
        return net
    names = [(p, p.name) for p in net.get_parameters()]
    chains = _fusion.find_chains(net, _kind, _compatible, lambda c: isinstance(c, _blocks()))
    for path, cell in _walk(net):
        target = SWAPS.get(type(cell))
        if target is None:
            base = next((cls for cls in SWAPS if isinstance(cell, cls)), None)
            if base is not None and not isinstance(cell, _KERNEL_CLASSES + _blocks()):
                _note(cell, f"subclass of nn.{base.__name__} ({type(cell).__name__}); its construct is its own")
            continue
        if _has_hooks(cell):
            _note(cell, "has hooks registered")
            continue
        cell.__class__ = target
        cell._mp_prepare()
    for chain in chains:
        _fuse(chain)
    stamp = time.time_ns()
    for i, (_, cell) in enumerate(_walk(net)):  # new keys for MindSpore's graph cache: recompile
        object.__setattr__(cell, "_create_time", stamp + i)
    for param, name in names:  # the swap never renames; this keeps it so whatever MindSpore does
        if param.name != name:
            param.name = name
    return net


def _fuse(chain: _fusion.Chain) -> None:
    conv, bn, act = chain.get("conv"), chain.get("bn"), chain.get("act")
    if any(getattr(c, "_mp_reason", "not swapped") is not None for c in (conv, bn) if c is not None):
        if conv is not None and bn is not None:  # the conv cannot take the BatchNorm: fuse what is left
            if getattr(bn, "_mp_reason", "x") is None and act is not None:
                _fuse(_fusion.Chain(("bn", "act"), (bn, act), chain.paths[1:]))
        return
    code, alpha = L.activation_code(act) if act is not None else (0, 0.0)
    if conv is not None:
        conv._mp_fuse(bn, code, alpha)
    if bn is not None:
        bn._mp_fuse(conv is not None, code, alpha)
    owner = chain.paths[0] if conv is not None else chain.paths[chain.kinds.index("bn")]
    for cell, path in zip(chain.cells, chain.paths):
        object.__setattr__(cell, "_mp_fused", tuple(chain.paths))
    if act is not None:
        act.__class__ = L.fused_activation_class(type(act))
        object.__setattr__(act, "_mp_fused_into", owner)


# ---------------------------------------------------------------- summary
@dataclass(frozen=True)
class Summary:
    """Which layers of a network run on the kernels. `native_layers`: (cell path, class name, reason)."""

    kernel_layers: int
    native_layers: Tuple[Tuple[str, str, str], ...]
    fused_chains: Tuple[Tuple[str, ...], ...]
    total: int

    def __str__(self) -> str:
        lines = [f"{self.kernel_layers} of {self.total} layers on the kernels"
                 + (f" ({len(self.fused_chains)} fused chains)" if self.fused_chains else "")]
        for path, cls, reason in self.native_layers:
            lines.append(f"  native: {path or '<root>'} ({cls}): {reason}")
        return "\n".join(lines)


def _native_reason(cell: nn.Cell, off: Optional[str]) -> str:
    if off is not None:
        return off
    skip = getattr(cell, "_mp_skip_reason", None)
    if skip:
        return skip
    if type(cell) in SWAPS:
        return "not accelerated (call mindplug.ops.accelerate on the network)"
    if L.activation_code(cell) is not None:
        return "activation not in a provable chain (e.g. called twice): runs as a native elementwise op"
    return f"no kernel for {type(cell).__name__}: runs natively"


def summary(net: nn.Cell) -> Summary:
    """Counts the layers (leaf cells, and mindplug's blocks as one each) on the kernels and lists the rest."""
    try:
        off = _dispatch.why_native(_library.LAYER_ENTRIES)
    except Exception as err:  # MINDPLUG_KERNELS=kernels on a machine that cannot run them
        off = str(err)
    blocks = _blocks()
    kernel = 0
    native: List[Tuple[str, str, str]] = []
    chains: Dict[Tuple[str, ...], None] = {}
    for path, cell in _walk(net):
        if isinstance(cell, blocks):
            if getattr(cell, "use_kernels", False):
                kernel += 1
            else:
                native.append((path, type(cell).__name__, off or "built with native ops (mindplug.ops._dispatch)"))
            continue
        if any(c is not None for c in cell._cells.values()):
            continue  # a container: its leaves are counted
        fused = getattr(cell, "_mp_fused", None)
        if isinstance(cell, _KERNEL_CLASSES) and off is None:
            if cell._mp_reason is None:
                kernel += 1
                if fused:
                    chains[fused] = None
            else:
                native.append((path, type(cell).__name__, cell._mp_reason))
        elif getattr(cell, "_mp_fused_into", None) is not None and off is None:
            kernel += 1
        else:
            native.append((path, type(cell).__name__, _native_reason(cell, off)))
    return Summary(kernel, tuple(native), tuple(chains), kernel + len(native))
