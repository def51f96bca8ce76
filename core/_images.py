"""Image files to uint8 HWC arrays, for every mode Pillow opens: 16-bit and 32-bit grey are scaled (not
clipped) to 8 bits, palette images expanded, CMYK turned into RGB, alpha dropped. A file Pillow cannot read
is a ``DataError`` naming it."""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ._errors import DataError

#: Pillow modes whose pixels are wider than 8 bits (grey)
_WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_array(image: Any, channels: Optional[int] = None) -> np.ndarray:
    """A Pillow image as uint8 HWC with 1 channel (grey sources) or 3 (colour), or ``channels`` if given."""
    mode = image.mode
    if mode in _WIDE:
        array = _wide_to_uint8(np.asarray(image))[:, :, None]
    else:
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode in ("1", "L", "LA", "La", "PA"):
            image = image.convert("L")
        elif mode != "RGB":
            image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBA, RGBX ...
        if image.mode == "RGBA":
            image = image.convert("RGB")
        array = np.asarray(image, dtype=np.uint8)
        array = array[:, :, None] if array.ndim == 2 else array
    if channels is None or array.shape[2] == channels:
        return np.ascontiguousarray(array)
    from ._data import to_channels

    return to_channels(array, channels)


def _wide_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit (and 32-bit integer or float) grey pixels onto 0..255: by the type's range, never clipped."""
    if values.dtype == np.uint16 or (np.issubdtype(values.dtype, np.integer) and values.max(initial=0) > 255):
        top = 65535.0 if values.max(initial=0) <= 65535 else float(values.max())
        return np.clip(np.rint(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(np.rint(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    return np.clip(values, 0, 255).astype(np.uint8)


def read_image(path: str, channels: Optional[int] = None, *, hint: str = "") -> np.ndarray:
    """The image file at ``path`` as uint8 HWC; an unreadable file is one ``DataError`` naming it (and
    ``hint``, the fix for the caller's situation)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise DataError(f"image file not found: {path}")
    if os.path.getsize(path) == 0:
        raise DataError(f"cannot decode image {path}: the file is empty (0 bytes){hint}")
    try:
        with Image.open(path) as image:  # Pillow refuses decompression bombs (> 2 x MAX_IMAGE_PIXELS)
            image.load()
            return to_array(image, channels)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {type(exc).__name__}: {exc}{hint}") from None
