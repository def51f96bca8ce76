"""Locates and loads the kernel library built by setup.py, by absolute path inside the package.

The library is never compiled at first use: when it is missing the package was installed without its
build step, and the error says how to rebuild. Loading it here (ctypes) serves the kernel tests and the
thread/GEMM set-up; MindSpore's Custom ops dlopen the same file through ``func_path(...)``.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where arrays are made: loading the library needs none
    import numpy as np

LIBRARY_NAME = "libmindplug_kernels.so"
#: the AOT entry points of the library
BLOCK_ENTRIES = ("Conv2dForward", "Conv2dBackwardData", "Conv2dBackwardFilter", "MaxPoolForward",
                 "MaxPoolBackward", "InceptionForward", "InceptionBackward")  # GoogLeNet's blocks
LAYER_ENTRIES = ("ConvForward", "ConvBackwardData", "ConvBackwardFilter", "PoolForward", "PoolBackward",
                 "BatchNormTrain", "BatchNormTrainBackward", "BatchNormInfer", "BatchNormInferBackward")  # any layer
STEP_ENTRIES = ("GradNorm", "GradClip")  # a training step's passes over all gradients
ENTRIES = BLOCK_ENTRIES + LAYER_ENTRIES + STEP_ENTRIES


#: an absolute path that replaces the packaged library, e.g. a sanitizer build (ops/csrc/README.md)
LIBRARY_ENV = "MINDPLUG_KERNELS_LIBRARY"


def library_path() -> Path:
    """Absolute path of the kernel library: the one built beside this module, or $MINDPLUG_KERNELS_LIBRARY."""
    override = os.environ.get(LIBRARY_ENV, "")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parent / LIBRARY_NAME


def available(entries: tuple = ENTRIES) -> bool:
    """True when the kernel library has been built with `entries` (default: every entry point)."""
    return library_path().is_file() and not missing_entries(entries)


@lru_cache(maxsize=4)
def _missing(path: str) -> tuple:
    try:
        lib = ctypes.CDLL(path)
    except OSError as err:
        return (f"cannot be loaded ({err})",)
    return tuple(name for name in ENTRIES if not hasattr(lib, name))


def missing_entries(entries: tuple = ENTRIES) -> tuple:
    """Those of `entries` the built library lacks (a stale build: rebuild with pip install -e .)."""
    path = library_path()
    return tuple(e for e in _missing(str(path)) if e in entries or " " in e) if path.is_file() else ()


def func_path(entry: str) -> str:
    """The ``func`` string of an AOT Custom op: ``/abs/path/lib.so:Entry``."""
    path = library_path()
    if not path.is_file():
        from mindplug._errors import MindplugError

        raise MindplugError(
            f"the mindplug kernel library {path} is missing; rebuild it with "
            f"`pip install -e . --no-deps --no-build-isolation` (or set MINDPLUG_KERNELS=native)")
    return f"{path}:{entry}"


def _mindspore_dnnl() -> Path | None:
    """oneDNN shipped inside the mindspore wheel, found without importing mindspore."""
    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "lib" / "libdnnl.so.3"
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL:
    """The kernel library through ctypes, with its GEMM backend bound and declared signatures."""
    lib = ctypes.CDLL(func_path("x").rsplit(":", 1)[0])
    aot = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int),
           ctypes.POINTER(ctypes.POINTER(ctypes.c_int64)), ctypes.POINTER(ctypes.c_char_p),
           ctypes.c_void_p, ctypes.c_void_p]
    for entry in ENTRIES:
        if not hasattr(lib, entry):  # a stale build: what it lacks is reported by missing_entries()
            continue
        fn = getattr(lib, entry)
        fn.argtypes, fn.restype = aot, ctypes.c_int
    lib.MindplugLastError.restype = ctypes.c_char_p
    lib.MindplugGemmBackend.restype = ctypes.c_char_p
    lib.MindplugBf16Kernel.restype = ctypes.c_char_p
    lib.MindplugLoadDnnl.argtypes, lib.MindplugLoadDnnl.restype = [ctypes.c_char_p], ctypes.c_int
    lib.MindplugSetNumThreads.argtypes = [ctypes.c_int]
    lib.MindplugForceOwnGemm.argtypes = [ctypes.c_int]
    lib.MindplugCpuHas.argtypes, lib.MindplugCpuHas.restype = [ctypes.c_char_p], ctypes.c_int
    lib.MindplugSetPrecision.argtypes, lib.MindplugSetPrecision.restype = [ctypes.c_int], ctypes.c_int
    lib.MindplugLastErrorAnyThread.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    if os.environ.get("MINDPLUG_GEMM", "") == "own":
        lib.MindplugForceOwnGemm(1)
    elif lib.MindplugGemmBackend() != b"onednn":
        dnnl = _mindspore_dnnl()
        if dnnl is not None:
            lib.MindplugLoadDnnl(str(dnnl).encode())
    return lib


def set_num_threads(n: int) -> None:
    """Sets the kernels' thread count (0 = OpenMP's default, omp_get_max_threads)."""
    load().MindplugSetNumThreads(int(n))


#: the GEMM precisions of the kernels, by the engine's names
PRECISIONS = ("float32", "bfloat16")


def bf16_available() -> bool:
    """True when the CPU has AVX512_BF16 (detected at run time) and the kernels use their oneDNN sgemm."""
    return bool(load().MindplugBf16Available())


def bf16_kernel() -> str:
    """The kernel of the bf16 GEMMs: 'amx' (AMX tiles), 'avx512_bf16' (vdpbf16ps), or 'none'."""
    return load().MindplugBf16Kernel().decode()


def set_precision(precision: str) -> str:
    """Sets the precision of every kernel GEMM in the process ('float32' or 'bfloat16': bf16 operands,
    fp32 accumulation, fp32 tensors in and out) and returns the one in effect: 'float32' where bf16 is
    not available. Activations, weights, BatchNorm, pooling and reductions stay fp32 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[load().MindplugSetPrecision(1 if precision == "bfloat16" else 0)]


def get_precision() -> str:
    """The precision the kernel GEMMs use now."""
    return PRECISIONS[load().MindplugGetPrecision()]


def last_error(any_thread: bool = False) -> str:
    """The message of the kernels' most recent error on this thread, or on any thread ('' if none).

    MindSpore runs kernels on its own threads, so the engine reports ``any_thread=True`` after an op failed.
    """
    lib = load()
    if not any_thread:
        return (lib.MindplugLastError() or b"").decode(errors="replace")
    buf = ctypes.create_string_buffer(512)
    lib.MindplugLastErrorAnyThread(buf, ctypes.c_size_t(len(buf)))
    return buf.value.decode(errors="replace")


def gemm_backend() -> str:
    """'onednn' or 'own': the GEMM the kernels use."""
    return load().MindplugGemmBackend().decode()


#: the colour-jitter steps of ``color_jitter``, by code
JITTER_STEPS = ("brightness", "contrast", "saturation")


@lru_cache(maxsize=16)
def _optional_entry(name: str, argtypes: tuple) -> ctypes._CFuncPtr | None:
    """A plain-C entry point of the library with its signature, or None without a library (MindplugError)
    or in a stale build (AttributeError): the data pipeline then does the work in Python."""
    try:
        fn = getattr(load(), name)
    except Exception:
        return None
    fn.argtypes, fn.restype = list(argtypes), ctypes.c_int
    return fn


def _raise_last_error() -> None:
    from mindplug._errors import MindplugError

    raise MindplugError(load().MindplugLastError().decode())


_JITTER_ARGS = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                ctypes.c_void_p, ctypes.c_int32)
_FLIP_ARGS = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
              ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)
_JITTER_IMAGES_ARGS = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)
_NORMALIZE_ARGS = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


def _jitter_fn() -> ctypes._CFuncPtr | None:
    return _optional_entry("MindplugColorJitter", _JITTER_ARGS)


def jitter_available() -> bool:
    """True when the built library has the colour-jitter entry point."""
    return _jitter_fn() is not None


def color_jitter(image: np.ndarray, steps: list[int], factors: list[float]) -> np.ndarray:
    """A new uint8 HWC image (1 or 3 channels): ``image`` through the steps (codes of ``JITTER_STEPS``) with
    their factors, in order, with Pillow's ImageEnhance arithmetic. ctypes releases the GIL for the call,
    so the data pipeline's threads run it in parallel."""
    import numpy as np

    from mindplug._errors import MindplugError

    fn = _jitter_fn()
    if fn is None:
        raise MindplugError("the kernel library has no MindplugColorJitter; rebuild with `pip install -e .`")
    src = np.ascontiguousarray(image, dtype=np.uint8)
    if src.ndim == 2:
        src = src[:, :, None]
    if src.ndim != 3:
        raise MindplugError(f"color jitter needs an HWC image, got shape {image.shape}")
    if len(steps) != len(factors):
        raise MindplugError(f"color jitter: {len(steps)} steps but {len(factors)} factors")
    out = np.empty_like(src)
    codes = (ctypes.c_int32 * max(len(steps), 1))(*steps)
    values = (ctypes.c_float * max(len(factors), 1))(*factors)
    code = fn(src.ctypes.data, out.ctypes.data, src.shape[0], src.shape[1], src.shape[2], codes, values,
              len(steps))
    if code != 0:
        _raise_last_error()
    return out.reshape(np.shape(image)) if np.ndim(image) == 2 else out


def _jitter_images_fn() -> ctypes._CFuncPtr | None:
    return _optional_entry("MindplugColorJitterImages", _JITTER_IMAGES_ARGS)


def jitter_images_available() -> bool:
    """True when the built library has the whole-batch colour-jitter entry point."""
    return _jitter_images_fn() is not None


def color_jitter_images(batch: np.ndarray, steps: np.ndarray, factors: np.ndarray, counts: np.ndarray,
                        threads: int = 1) -> None:
    """Jitters, in place, each uint8 HWC image ``batch[i]`` (1 or 3 channels) through its first ``counts[i]``
    steps ``steps[i]`` (codes of ``JITTER_STEPS``) with ``factors[i]``, as ``color_jitter`` does one image,
    on up to ``threads`` threads with the GIL released."""
    import numpy as np

    from mindplug._errors import MindplugError

    fn = _jitter_images_fn()
    if fn is None:
        raise MindplugError("the kernel library has no MindplugColorJitterImages; rebuild with `pip install -e .`")
    if batch.dtype != np.uint8 or batch.ndim != 4 or not batch.flags.c_contiguous or not batch.flags.writeable:
        raise MindplugError(f"color jitter needs a writable C-contiguous uint8 NHWC batch, got {batch.dtype} "
                            f"{batch.shape}")
    n = batch.shape[0]
    codes = np.ascontiguousarray(steps, dtype=np.int32)
    values = np.ascontiguousarray(factors, dtype=np.float32)
    todo = np.ascontiguousarray(counts, dtype=np.int32)
    if codes.ndim != 2 or codes.shape[0] != n or values.shape != codes.shape or todo.shape != (n,):
        raise MindplugError(f"color jitter of {n} images: steps {codes.shape}, factors {values.shape} and counts "
                            f"{todo.shape} must be (n, k), (n, k) and (n,)")
    code = fn(batch.ctypes.data, n, batch.shape[1], batch.shape[2], batch.shape[3], codes.ctypes.data,
              values.ctypes.data, todo.ctypes.data, codes.shape[1], max(1, int(threads)))
    if code != 0:
        _raise_last_error()


def normalize_images(batch: np.ndarray, mean: "list[float]", std: "list[float]", chw: bool,
                     threads: int = 1) -> np.ndarray | None:
    """``(batch - mean) / std`` of a uint8 NHWC batch as a new float32 array, NCHW when ``chw``, with
    MindSpore's Normalize arithmetic, on up to ``threads`` threads with the GIL released; None (nothing
    done) where the library or the input does not serve, so the caller normalises in numpy."""
    import numpy as np

    fn = _optional_entry("MindplugNormalizeImages", _NORMALIZE_ARGS)
    if fn is None or batch.dtype != np.uint8 or batch.ndim != 4 or len(mean) != batch.shape[3] \
            or len(std) != batch.shape[3]:
        return None
    src = np.ascontiguousarray(batch)
    n, height, width, channels = src.shape
    out = np.empty((n, channels, height, width) if chw else src.shape, np.float32)
    means, stds = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    code = fn(src.ctypes.data, out.ctypes.data, n, height, width, channels, means.ctypes.data, stds.ctypes.data,
              1 if chw else 0, max(1, int(threads)))
    if code != 0:
        _raise_last_error()
    return out


def flip_images(batch: np.ndarray, chosen: np.ndarray, axis: int, channels_last: bool = False) -> bool:
    """Mirrors ``batch[chosen]`` in place along ``axis`` (columns or rows) of a C-contiguous batch, in C++
    with the GIL released: NCHW-like when ``channels_last`` is False (the last two axes are rows and
    columns), NHWC when True (rows and columns are the two before the last, whose values move together).
    False (nothing done) where the library or the layout does not serve, so the caller flips in numpy."""
    import numpy as np

    fn = _optional_entry("MindplugFlipItems", _FLIP_ARGS)
    spatial = (batch.ndim - 3, batch.ndim - 2) if channels_last else (batch.ndim - 2, batch.ndim - 1)
    if fn is None or batch.ndim < (4 if channels_last else 3) or not batch.flags.c_contiguous \
            or not batch.flags.writeable or axis not in spatial:
        return False
    index = np.ascontiguousarray(chosen, dtype=np.int64)
    rows, cols = batch.shape[spatial[0]], batch.shape[spatial[1]]
    item = batch.itemsize * (batch.shape[-1] if channels_last else 1)
    planes = int(np.prod(batch.shape[1:spatial[0]], dtype=np.int64))
    code = fn(batch.ctypes.data, batch.shape[0], planes, rows, cols, item, index.ctypes.data, index.size,
              1 if axis == spatial[1] else 0)
    if code != 0:
        _raise_last_error()
    return True


_JPEG_CROP_ARGS = (ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_double,
                   ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                   ctypes.c_void_p, ctypes.c_int32)
_CROP_RGB_ARGS = (ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_double,
                  ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p)


def jpeg_crop_available() -> bool:
    """True when the library can decode JPEG crops: built with jpeglib.h and libjpeg-turbo found at run time."""
    fn = _optional_entry("MindplugJpegCropAvailable", ())
    return fn is not None and fn() == 1


def decode_crop_jpegs(files: "list[np.ndarray]", draws: np.ndarray, scale: "tuple[float, float]",
                      ratio: "tuple[float, float]", size: "tuple[int, int]", threads: int = 1
                      ) -> "tuple[np.ndarray, np.ndarray]":
    """(uint8 NHWC RGB batch, int32 status per file): a random resized crop of each encoded JPEG ``files[i]``
    (uint8 bytes), its box drawn as MindSpore's RandomResizedCrop draws it from ``draws[i]`` (attempts x 4
    numbers in [0, 1)), resized bilinearly to ``size`` (height, width). Status 0 is decoded, 1 a JPEG
    colour space the decoder does not take, 2 refused by libjpeg; those images are left unwritten. On up to
    ``threads`` threads with the GIL released."""
    import numpy as np

    fn = _optional_entry("MindplugDecodeCropJpegs", _JPEG_CROP_ARGS)
    if fn is None:
        from mindplug._errors import MindplugError

        raise MindplugError("the kernel library has no MindplugDecodeCropJpegs; rebuild with `pip install -e .`")
    n = len(files)
    buffers = [np.ascontiguousarray(f, dtype=np.uint8) for f in files]
    pointers = (ctypes.c_void_p * max(n, 1))(*[b.ctypes.data for b in buffers])
    sizes = np.array([b.size for b in buffers], np.int64)
    table = np.ascontiguousarray(draws, dtype=np.float64)
    if table.ndim != 3 or table.shape[0] != n or table.shape[2] != 4:
        from mindplug._errors import MindplugError

        raise MindplugError(f"crop draws for {n} files must be ({n}, attempts, 4), got {table.shape}")
    out = np.empty((n, int(size[0]), int(size[1]), 3), np.uint8)
    status = np.zeros(n, np.int32)
    code = fn(n, pointers, sizes.ctypes.data, table.ctypes.data, table.shape[1], float(scale[0]), float(scale[1]),
              float(ratio[0]), float(ratio[1]), int(size[0]), int(size[1]), out.ctypes.data, status.ctypes.data,
              max(1, int(threads)))
    if code != 0:
        _raise_last_error()
    return out, status


def crop_resize_rgb(image: np.ndarray, draws: np.ndarray, scale: "tuple[float, float]",
                    ratio: "tuple[float, float]", size: "tuple[int, int]") -> np.ndarray:
    """The random resized crop of ``decode_crop_jpegs`` on a decoded RGB image (HWC uint8)."""
    import numpy as np

    from mindplug._errors import MindplugError

    fn = _optional_entry("MindplugCropResizeRgb", _CROP_RGB_ARGS)
    if fn is None:
        raise MindplugError("the kernel library has no MindplugCropResizeRgb; rebuild with `pip install -e .`")
    src = np.ascontiguousarray(image, dtype=np.uint8)
    table = np.ascontiguousarray(draws, dtype=np.float64)
    if src.ndim != 3 or src.shape[2] != 3 or table.ndim != 2 or table.shape[1] != 4:
        raise MindplugError(f"a crop of an RGB image needs HWC x 3 and (attempts, 4) draws, got {src.shape} and "
                            f"{table.shape}")
    out = np.empty((int(size[0]), int(size[1]), 3), np.uint8)
    code = fn(src.ctypes.data, src.shape[0], src.shape[1], table.ctypes.data, table.shape[0], float(scale[0]),
              float(scale[1]), float(ratio[0]), float(ratio[1]), int(size[0]), int(size[1]), out.ctypes.data)
    if code != 0:
        _raise_last_error()
    return out


def call(entry: str, inputs: "list", out_shapes: "list[tuple[int, ...]]", out: "list | None" = None) -> "list":
    """Runs one kernel entry point on numpy arrays with the AOT ABI, outside MindSpore.

    Used by the kernel tests and the per-kernel profile; raises with the kernel's own message. ``out``
    reuses float32 arrays (as MindSpore's memory pool does) instead of fresh ones from ``out_shapes``.
    """
    import numpy as np

    lib = load()
    arrays = [np.ascontiguousarray(a) for a in inputs]
    arrays += list(out) if out is not None else [np.empty(s, np.float32) for s in out_shapes]
    n = len(arrays)
    shape_bufs = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays]
    params = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
    ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
    shapes = (ctypes.POINTER(ctypes.c_int64) * n)(
        *[ctypes.cast(b, ctypes.POINTER(ctypes.c_int64)) for b in shape_bufs])
    dtypes = (ctypes.c_char_p * n)(*[str(a.dtype).encode() for a in arrays])
    code = getattr(lib, entry)(n, params, ndims, shapes, dtypes, None, None)
    if code != 0:
        _raise_last_error()
    return arrays[len(inputs):]
