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
from typing import Iterator, Optional

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


def why_native(entries: Optional[tuple] = None) -> Optional[str]:
    """None when a layer built now should run on the C++ kernels, else why it runs natively. `entries`: the
    entry points it needs (default: GoogLeNet's blocks'; the general layers pass theirs).

    Raises under ``MINDPLUG_KERNELS=kernels`` when the kernels cannot run."""
    choice = _env_choice()
    if choice == "native":
        return f"{ENV}=native"
    if getattr(_state, "native_depth", 0):
        return "built inside mindplug.ops._dispatch.native()"
    import mindspore as ms

    device = ms.get_context("device_target")
    reason = None
    if device != "CPU":
        reason = f"the device target is {device}"
    elif not _library.library_path().is_file():
        reason = f"the kernel library {_library.library_path()} is not built"
    elif _library.missing_entries(entries or _library.BLOCK_ENTRIES):
        missing = _library.missing_entries(entries or _library.BLOCK_ENTRIES)
        reason = (f"the kernel library {_library.library_path()} is out of date (no {', '.join(missing[:3])}); "
                  f"rebuild it with `pip install -e . --no-deps --no-build-isolation`")
    if reason is not None and choice == "kernels":
        from mindplug._errors import ConfigError

        raise ConfigError(f"{ENV}=kernels but {reason}; unset {ENV} or set it to 'native'")
    if reason is None:
        configure_threads()
    return reason


def use_kernels() -> bool:
    """True when a block built now should run on the C++ kernels."""
    return why_native() is None


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
    """Hands the thread count to the kernels and makes PyNative's launch synchronous; returns the count."""
    n = kernel_threads()
    _library.set_num_threads(n)
    synchronous_pynative()
    return n


#: set to keep MindSpore's asynchronous PyNative launch (see synchronous_pynative)
ASYNC_ENV = "MINDPLUG_PYNATIVE_ASYNC"
_sync_lock = threading.Lock()
_sync_done = False


def synchronous_pynative() -> None:
    """Sets MindSpore's ``pynative_synchronize`` (once per process, CPU only, unless $MINDPLUG_PYNATIVE_ASYNC).

    Why: in asynchronous PyNative mode two MindSpore queue threads busy-wait on the cores the kernels compute
    on, so on a small CPU a PyNative step ran the kernels at one thread's speed plus the queues' overhead
    (bench/RESULTS.md). The flag only makes PyNative launch synchronously (GRAPH mode is unaffected; results
    are identical); ``mindspore.runtime.launch_blocking``, which MindSpore suggests instead, also slows GRAPH."""
    global _sync_done
    if _sync_done or os.environ.get(ASYNC_ENV, "").strip() not in ("", "0"):
        return
    with _sync_lock:
        if _sync_done:
            return
        import logging

        import mindspore as ms

        if ms.get_context("device_target") == "CPU" and not ms.get_context("pynative_synchronize"):
            try:  # MindSpore logs a deprecation note for the key; it is the PyNative-only switch in 2.10
                from mindspore import log as ms_log

                ms_logger = ms_log._get_logger()
                level = ms_logger.level
                ms_logger.setLevel(logging.ERROR)
            except Exception:  # noqa: BLE001 - the note is cosmetic
                ms_logger = None
            try:
                ms.set_context(pynative_synchronize=True)
            finally:
                if ms_logger is not None:
                    ms_logger.setLevel(level)
        _sync_done = True
