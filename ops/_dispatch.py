"""Which implementation a block uses: the C++ kernels on CPU, the native composition elsewhere.

- device target CPU (and the library built) -> kernels;
- Ascend / GPU, inside ``native()`` (``mindplug export`` builds its network there, so exported graphs hold
  only standard ops), or with ``MINDPLUG_KERNELS=native`` -> native composition;
- ``MINDPLUG_KERNELS=kernels`` insists on the kernels and fails loudly when they cannot run.
The choice is made when a block is built, so one network never mixes the two by accident.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

from mindplug.ops import _library

ENV = "MINDPLUG_KERNELS"
_CHOICES = ("auto", "kernels", "native")
_state = threading.local()


def _env_choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        from mindplug._errors import ConfigError, did_you_mean

        raise ConfigError(f"{ENV}={value!r} is not one of {', '.join(_CHOICES)}{did_you_mean(value, _CHOICES)}")
    return value


@contextlib.contextmanager
def native() -> Iterator[None]:
    """Blocks built inside this context use the native composition (export, comparisons)."""
    depth = getattr(_state, "native_depth", 0)
    _state.native_depth = depth + 1
    try:
        yield
    finally:
        _state.native_depth = depth


def use_kernels() -> bool:
    """True when a block built now should run on the C++ kernels."""
    choice = _env_choice()
    if choice == "native" or getattr(_state, "native_depth", 0):
        return False
    import mindspore as ms

    device = ms.get_context("device_target")
    if choice == "kernels":
        if device != "CPU" or not _library.available():
            from mindplug._errors import ConfigError

            reason = (f"the device target is {device}" if device != "CPU"
                      else f"the library {_library.library_path()} is not built")
            raise ConfigError(f"{ENV}=kernels but {reason}; unset {ENV} or set it to 'native'")
    elif device != "CPU" or not _library.available():
        return False
    configure_threads()
    return True


def kernel_threads() -> int:
    """MindSpore's CPU thread setting (``set_context(runtime_num_threads=...)``), capped by OMP_NUM_THREADS
    and by the cores this process may run on."""
    import mindspore as ms

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = int(ms.get_context("runtime_num_threads") or cores)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        limit = min(limit, int(omp))
    return max(1, min(limit, cores))


def configure_threads() -> int:
    """Hands the thread count to the kernels; returns it."""
    n = kernel_threads()
    _library.set_num_threads(n)
    return n
