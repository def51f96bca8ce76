"""The decode of an encoded-image pipeline whose only per-image step is a random resized crop, done a batch
at a time in mindplug's C++ library (libjpeg-turbo, ``ops/csrc/jpeg_crop.cc``).

MindSpore's ``RandomCropDecodeResize`` runs once per image in a ``map`` and decodes with the plain C paths
of the libjpeg it bundles. Here the files of a batch are decoded in one call with the GIL released, only
as much of each file as its crop needs, and the ``batch`` op's workers decode batches side by side. The crop
boxes are drawn as RandomResizedCrop draws them, from a generator seeded by the pass's seed and the batch's
number, so a pass draws the same boxes whatever the worker count.

A file libjpeg refuses (or warns about: corrupt data) raises, and the pipeline traces it and decodes it
through the source instead, as it does a file MindSpore's decoder refuses. Files that are not JPEG (PNG,
BMP, a source's own re-encoded image) are decoded with Pillow and cropped the same way.
"""
from __future__ import annotations

import io
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

_JPEG = b"\xff\xd8\xff"
_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


class DecodeError(RuntimeError):
    """libjpeg refused a file of the batch (the pipeline then decodes it through the source)."""


def mostly_jpeg(samples: Sequence[Tuple[str, int]], probe: int = 1000) -> bool:
    """Whether at least half of up to ``probe`` evenly spaced ``(path, label)`` samples are named as JPEG
    files: the batch decode pays off for them, while a folder of PNGs keeps MindSpore's parallel per-image
    decode."""
    if not samples:
        return False
    step = max(1, len(samples) // probe)
    names = [str(samples[i][0]).lower() for i in range(0, len(samples), step)]
    return 2 * sum(name.endswith(_SUFFIXES) for name in names) >= len(names)


def available() -> bool:
    try:
        from mindplug.ops import _library

        return _library.jpeg_crop_available()
    except ImportError:
        return False


class JpegCropBatches:
    """The ``per_batch_map`` of a files pipeline: a list of encoded files in, their random resized crops
    (uint8 NHWC, RGB) out.

    ``size`` is (height, width); ``scale``, ``ratio`` and ``attempts`` are RandomResizedCrop's; ``seed`` and
    ``start`` (the position in the pass a rebuilt pipeline starts from) seed each batch's draws.
    """

    def __init__(self, size: Tuple[int, int], scale: Tuple[float, float], ratio: Tuple[float, float],
                 attempts: int, seed: int, start: int = 0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.attempts = max(1, int(attempts))
        self.seed, self.start = int(seed), int(start)

    @classmethod
    def of(cls, crop: Any, seed: int) -> Optional["JpegCropBatches"]:
        """The batch decode doing MindSpore's ``RandomCropDecodeResize`` ``crop``, or None where it cannot (an
        interpolation other than bilinear, or no libjpeg-turbo)."""
        import mindspore.dataset.vision as msv

        if type(crop) is not msv.RandomCropDecodeResize or crop.interpolation != msv.Inter.BILINEAR \
                or not available():
            return None
        size = crop.size if isinstance(crop.size, (tuple, list)) else (crop.size, crop.size)
        return cls(tuple(size), tuple(crop.scale), tuple(crop.ratio), crop.max_attempts, seed)

    def restarted(self, start: int) -> "JpegCropBatches":
        return JpegCropBatches(self.size, self.scale, self.ratio, self.attempts, self.seed, start)

    def draws(self, batch: int, count: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0xC209, self.start, int(batch)])
        return rng.random((count, self.attempts, 4))

    def __call__(self, files: List[np.ndarray], info: Any) -> Tuple[np.ndarray]:
        return (self.decode(files, info.get_batch_num()),)

    def decode(self, files: Sequence[np.ndarray], batch: int = 0) -> np.ndarray:
        from mindplug.ops import _library

        draws = self.draws(batch, len(files))
        jpeg = [i for i, data in enumerate(files) if bytes(data[:3]) == _JPEG]
        if len(jpeg) == len(files):
            images, status = _library.decode_crop_jpegs(list(files), draws, self.scale, self.ratio, self.size)
        else:
            images = np.empty((len(files),) + self.size + (3,), np.uint8)
            status = np.ones(len(files), np.int32)
            if jpeg:
                decoded, status[jpeg] = _library.decode_crop_jpegs([files[i] for i in jpeg], draws[jpeg], self.scale,
                                                                  self.ratio, self.size)
                images[jpeg] = decoded
        for i in np.flatnonzero(status).tolist():
            if status[i] == 2:
                raise DecodeError(f"libjpeg refused image {i} of batch {batch}")
            images[i] = _library.crop_resize_rgb(_pillow_rgb(files[i]), draws[i], self.scale, self.ratio, self.size)
        return images

    def check(self, data: np.ndarray) -> None:
        """Raises when this decode refuses the encoded file ``data`` (the pipeline's trace of a failure)."""
        self.decode([data])


def _pillow_rgb(data: np.ndarray) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data.tobytes())) as image:
        return np.asarray(image.convert("RGB"))
