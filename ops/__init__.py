"""mindplug.ops: the building blocks models are made of, and the kernels behind any network.

- ``accelerate(net)`` puts any network's convolutions, BatchNorms and pools on the C++ kernels in place
  (fusing provable conv -> BatchNorm -> activation chains); ``summary(net)`` says which layers run where.
- ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``: mindspore.nn's cells (same signatures, same parameters) on the
  kernels.
- ``ConvReLU``, ``Inception``, ``MaxPoolSame``: GoogLeNet's fused blocks.

Attributes are resolved lazily so ``import mindplug.ops`` stays free of MindSpore; a block's
implementation (native composition or a fused kernel) can change behind its Cell without the
models that use it or their parameter names changing.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List

#: public name -> submodule that defines it
_LAZY: Dict[str, str] = {
    "ConvReLU": "blocks",
    "Inception": "blocks",
    "MaxPoolSame": "blocks",
    "Conv2d": "layers",
    "MaxPool2d": "layers",
    "AvgPool2d": "layers",
    "accelerate": "acceleration",
    "summary": "acceleration",
    "Summary": "acceleration",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mindplug.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
