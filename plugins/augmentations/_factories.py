"""The augmentation factories: MindSpore dataset vision ops where they are right, Pillow/numpy elsewhere.

Every factory is keyword-only and returns one per-sample transform (or, for ``mixup_cutmix``, a batch
transform). Sizes are an int or ``(height, width)``; mean/std are on the 0..255 scale, as in MindCV.
"""
from __future__ import annotations

import math
import os
import random
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import mindspore.dataset.transforms as mst
import mindspore.dataset.vision as msv
import numpy as np
from mindspore.dataset.vision import Border, Inter
from PIL import Image, ImageEnhance

from mindplug import IMAGENET_MEAN, IMAGENET_STD
from mindplug._errors import ConfigError, did_you_mean

from . import _pil_ops
from ._mix import MixupCutmix
from ._policy import parse_policy

Size = Union[int, Sequence[int]]
Range = Union[float, Sequence[float]]

IMAGENET_GRAY_MEAN = (sum(IMAGENET_MEAN) / 3,)
IMAGENET_GRAY_STD = (sum(IMAGENET_STD) / 3,)

_INTER = {"nearest": Inter.NEAREST, "bilinear": Inter.BILINEAR, "linear": Inter.LINEAR,
          "bicubic": Inter.BICUBIC, "cubic": Inter.CUBIC, "area": Inter.AREA, "pilcubic": Inter.PILCUBIC}
_BORDER = {"constant": Border.CONSTANT, "edge": Border.EDGE, "reflect": Border.REFLECT,
           "symmetric": Border.SYMMETRIC}


#: names MindSpore's C++ image ops cannot do on decoded (numpy) images, with the reason
_UNSUPPORTED = {"lanczos": "MindSpore's resize on numpy images has no lanczos/antialias filter",
                "antialias": "MindSpore's resize on numpy images has no lanczos/antialias filter"}


def _lookup(table: dict, value: Any, what: str, component: str) -> Any:
    key = str(value).lower()
    if key not in table:
        why = f" ({_UNSUPPORTED[key]})" if key in _UNSUPPORTED else did_you_mean(key, table)
        raise ConfigError(f"{component}: unknown {what} {value!r}{why}; choose one of {', '.join(table)}")
    return table[key]


def _build(component: str, ctor: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Construct a MindSpore op, turning its argument checks into errors that name the component."""
    try:
        return ctor(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{component}: {exc}") from None


def _size(size: Size, component: str) -> Union[int, Tuple[int, int]]:
    if isinstance(size, (int, np.integer)) and size > 0:
        return int(size)
    if isinstance(size, Sequence) and len(size) == 2 and all(int(s) > 0 for s in size):
        return (int(size[0]), int(size[1]))
    raise ConfigError(f"{component}: size must be a positive int or (height, width), got {size!r}")


def random_resized_crop(*, size: Size, scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (0.75, 1.333), interpolation: str = "bilinear",
                        max_attempts: int = 10) -> Any:
    """Crop a random area fraction ``scale`` with aspect ``ratio``, resized to ``size`` (Inception crop)."""
    return _build("random_resized_crop", msv.RandomResizedCrop, _size(size, "random_resized_crop"),
                  scale=tuple(scale), ratio=tuple(ratio),
                  interpolation=_lookup(_INTER, interpolation, "interpolation", "random_resized_crop"),
                  max_attempts=max_attempts)


def random_crop(*, size: Size, padding: Union[int, Sequence[int]] = 0, pad_if_needed: bool = False,
                fill: Union[int, Sequence[int]] = 0, padding_mode: str = "constant") -> Any:
    """Pad by ``padding`` then crop ``size`` at a random place (the CIFAR / Fashion-MNIST crop)."""
    fill_value = tuple(fill) if isinstance(fill, Sequence) else int(fill)
    return _build("random_crop", msv.RandomCrop, _size(size, "random_crop"),
                  padding=padding if padding else None, pad_if_needed=pad_if_needed, fill_value=fill_value,
                  padding_mode=_lookup(_BORDER, padding_mode, "padding_mode", "random_crop"))


class _OwnRandom:
    """A transform that draws from a generator of its own (one per process, seeded from numpy's global
    generator, which the pipeline seeds per epoch and worker): MindSpore seeds all its random ops alike, so
    two of them in one pipeline would make the same draws."""

    _rng: Any = None
    _pid: int = -1

    @property
    def rng(self) -> np.random.Generator:
        if self._pid != os.getpid():
            self._rng, self._pid = np.random.default_rng(np.random.randint(0, 2**31 - 1)), os.getpid()
        return self._rng

    def __getstate__(self) -> dict:  # a worker process starts a generator of its own
        return {k: v for k, v in self.__dict__.items() if k not in ("_rng", "_pid")}


class RandomFlip(_OwnRandom):
    """Mirror an HWC image along ``axis`` (1: left-right, 0: top-bottom) with probability ``prob``."""

    def __init__(self, axis: int, prob: float) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"{'hflip' if axis == 1 else 'vflip'}: prob must be in [0, 1], got {prob}")
        self.axis, self.prob = axis, float(prob)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.rng.random() < self.prob:
            return np.ascontiguousarray(np.flip(image, axis=self.axis))
        return image

    def as_mindspore_ops(self, channels: int) -> list:
        """MindSpore's C++ flip, where the pipeline has no other random C++ op to draw alike."""
        op = msv.RandomHorizontalFlip if self.axis == 1 else msv.RandomVerticalFlip
        return [op(prob=self.prob)]


def hflip(*, prob: float = 0.5) -> RandomFlip:
    """Mirror left-right with probability ``prob``."""
    return RandomFlip(1, prob)


def vflip(*, prob: float = 0.5) -> RandomFlip:
    """Mirror top-bottom with probability ``prob``."""
    return RandomFlip(0, prob)


def resize(*, size: Size, interpolation: str = "bilinear") -> Any:
    """Resize; an int sets the shorter side (aspect kept), ``(h, w)`` sets both."""
    return _build("resize", msv.Resize, _size(size, "resize"),
                  interpolation=_lookup(_INTER, interpolation, "interpolation", "resize"))


def center_crop(*, size: Size) -> Any:
    """Crop ``size`` from the centre."""
    return _build("center_crop", msv.CenterCrop, _size(size, "center_crop"))


def resize_center_crop(*, size: Size, crop_pct: float = 0.875, interpolation: str = "bilinear") -> Any:
    """Evaluation crop: resize to ``floor(size / crop_pct)`` then centre-crop ``size`` (MindCV/timm)."""
    if not 0.0 < crop_pct <= 1.0:
        raise ConfigError(f"resize_center_crop: crop_pct must be in (0, 1], got {crop_pct}")
    size = _size(size, "resize_center_crop")
    if isinstance(size, int):
        scale: Union[int, Tuple[int, int]] = int(np.floor(size / crop_pct))
    elif size[0] == size[1]:
        scale = int(np.floor(size[0] / crop_pct))
    else:
        scale = (int(size[0] / crop_pct), int(size[1] / crop_pct))
    return mst.Compose([resize(size=scale, interpolation=interpolation), center_crop(size=size)])


def _range(value: Range, name: str, centre: float, low: float) -> Tuple[float, float]:
    if isinstance(value, Sequence):
        if len(value) != 2 or value[0] > value[1] or value[0] < low:
            raise ConfigError(f"color_jitter: {name} range must be (lo, hi) with {low} <= lo <= hi, got {value}")
        return float(value[0]), float(value[1])
    if value < 0:
        raise ConfigError(f"color_jitter: {name} must be >= 0, got {value}")
    return max(low, centre - float(value)), centre + float(value)


class ColorJitter:
    """Brightness, contrast, saturation and hue in random order (torchvision semantics), on Pillow.

    MindSpore's RandomColorAdjust refuses 1-channel images; on those only brightness and contrast apply.
    """

    def __init__(self, brightness: Range, contrast: Range, saturation: Range, hue: Range) -> None:
        self.brightness = _range(brightness, "brightness", 1.0, 0.0)
        self.contrast = _range(contrast, "contrast", 1.0, 0.0)
        self.saturation = _range(saturation, "saturation", 1.0, 0.0)
        self.hue = _range(hue, "hue", 0.0, -0.5)
        if self.hue[1] > 0.5:
            raise ConfigError(f"color_jitter: hue must be within [-0.5, 0.5], got {hue}")

    @staticmethod
    def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
        h, s, v = image.convert("HSV").split()
        h = h.point(lambda x: (x + int(round(shift * 255))) % 256)
        return Image.merge("HSV", (h, s, v)).convert("RGB")

    @property
    def releases_gil(self) -> bool:
        """Whether this jitter runs in C++ with the GIL released (no hue step, kernel library built): the
        pipeline then keeps it in its map threads instead of moving it to worker processes."""
        from mindplug.ops import _library

        return self.hue == (0.0, 0.0) and _library.jitter_available()

    @property
    def on_batch(self) -> Any:
        """The batch form (``jitter_batch``) where mindplug's C++ library serves it (no hue step), else None:
        the pipeline then keeps the per-image step."""
        from mindplug.ops import _library

        return self.jitter_batch if self.hue == (0.0, 0.0) and _library.jitter_images_available() else None

    def jitter_batch(self, images: np.ndarray, rng: np.random.Generator, threads: int = 1) -> np.ndarray:
        """Each uint8 HWC image of a stacked batch jittered in place, in one C++ call on up to ``threads``
        threads: per image a random order of the active steps and a uniform factor for each, drawn from
        ``rng`` (the hue step is the identity here, so leaving it out of the order changes nothing)."""
        from mindplug.ops import _library

        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
            return np.stack([self(image) for image in images])
        spans = [self.brightness, self.contrast] + ([self.saturation] if images.shape[3] == 3 else [])
        active = [code for code, span in enumerate(spans) if span != (1.0, 1.0)]
        if not active or not images.shape[0]:
            return images
        count = images.shape[0]
        order = rng.permuted(np.tile(np.array(active, np.int32), (count, 1)), axis=1)
        low = np.array([span[0] for span in spans], np.float64)[order]
        high = np.array([span[1] for span in spans], np.float64)[order]
        factors = rng.uniform(low, high)
        images = np.ascontiguousarray(images)
        _library.color_jitter_images(images, order, factors, np.full(count, len(active), np.int32), threads)
        return images

    def __call__(self, image: np.ndarray) -> np.ndarray:
        array = np.asarray(image)
        if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] in (1, 3) and self.releases_gil:
            return self._in_cpp(array)
        return self._in_pillow(array)

    def _in_cpp(self, image: np.ndarray) -> np.ndarray:
        """The Pillow path's draws and arithmetic, in one C++ call (mindplug.ops' MindplugColorJitter)."""
        from mindplug.ops import _library

        steps = [(self.brightness, 0), (self.contrast, 1)]
        if image.shape[2] == 3:  # the hue step (identity here) is shuffled too, for the same draws
            steps += [(self.saturation, 2), (self.hue, -1)]
        random.shuffle(steps)
        active = [((lo, hi), code) for (lo, hi), code in steps if code >= 0 and not lo == hi == 1.0]
        factors = [random.uniform(lo, hi) for (lo, hi), _ in active]
        return _library.color_jitter(image, [code for _, code in active], factors)

    def _in_pillow(self, image: np.ndarray) -> np.ndarray:
        pil = _pil_ops.to_pil(image)
        steps = [
            (self.brightness, lambda im, f: ImageEnhance.Brightness(im).enhance(f), 1.0),
            (self.contrast, lambda im, f: ImageEnhance.Contrast(im).enhance(f), 1.0),
        ]
        if pil.mode == "RGB":
            steps += [(self.saturation, lambda im, f: ImageEnhance.Color(im).enhance(f), 1.0),
                      (self.hue, self._shift_hue, 0.0)]
        random.shuffle(steps)
        for (lo, hi), apply, identity in steps:
            if lo == hi == identity:
                continue
            pil = apply(pil, random.uniform(lo, hi))
        return _pil_ops.from_pil(pil)

    def as_mindspore_ops(self, channels: int) -> list | None:
        """The same jitter as one MindSpore C++ op, for RGB images: brightness, contrast and saturation are
        blends that commute, so the order MindSpore applies them in gives what a random order gives, up to
        clipping, with pixels rounded to nearest where Pillow truncates (at most 1 apart). One op, because
        MindSpore seeds every random op alike: separate ops would draw equal factors. None (keep this Pillow
        step) for grey images and for hue jitter, whose HSV conversion differs from Pillow's."""
        if channels != 3 or self.hue != (0.0, 0.0):
            return None
        spans = {"brightness": self.brightness, "contrast": self.contrast, "saturation": self.saturation}
        active = {name: span for name, span in spans.items() if span != (1.0, 1.0)}
        return [msv.RandomColorAdjust(**active)] if active else []


def color_jitter(*, brightness: Range = 0.4, contrast: Range = 0.4, saturation: Range = 0.4,
                 hue: Range = 0.0) -> ColorJitter:
    """Random photometric jitter; a float ``x`` means the factor range ``[max(0, 1 - x), 1 + x]``."""
    return ColorJitter(brightness, contrast, saturation, hue)


def _policy_op(family: str, cls: type, policy: str, interpolation: str, mean: Sequence[float]) -> Any:
    config = parse_policy(policy, family)
    resample = _lookup(_pil_ops.PIL_RESAMPLE, interpolation, "interpolation", family)
    values = list(mean) * (3 if len(mean) == 1 else 1)
    fill = tuple(int(min(255, max(0, round(v)))) for v in values)
    return cls(config, fill=fill, resample=resample)


def rand_augment(*, policy: str = "randaug-m9-n2-mstd0.5", interpolation: str = "bilinear",
                 mean: Sequence[float] = IMAGENET_MEAN) -> Any:
    """RandAugment from a policy string (``randaug-m9-n2-mstd0.5-inc1``); ``mean`` fills exposed pixels."""
    return _policy_op("rand_augment", _pil_ops.RandAugment, policy, interpolation, mean)


def auto_augment(*, policy: str = "autoaug", interpolation: str = "bilinear",
                 mean: Sequence[float] = IMAGENET_MEAN) -> Any:
    """AutoAugment ImageNet policy from a string (``autoaug``, ``autoaug-originalr``, ``autoaug-v0-mstd0.5``)."""
    return _policy_op("auto_augment", _pil_ops.AutoAugment, policy, interpolation, mean)


def trivial_augment_wide(*, policy: str = "trivialaugwide", interpolation: str = "bilinear",
                         mean: Sequence[float] = IMAGENET_MEAN) -> Any:
    """TrivialAugmentWide (``trivialaugwide``, optionally ``-bins31``)."""
    return _policy_op("trivial_augment_wide", _pil_ops.TrivialAugmentWide, policy, interpolation, mean)


def augmix(*, policy: str = "augmix-m3-w3", interpolation: str = "bilinear",
           mean: Sequence[float] = IMAGENET_MEAN) -> Any:
    """AugMix from a policy string (``augmix-m3-w3-d-1-a1``: severity, width, depth, alpha)."""
    return _policy_op("augmix", _pil_ops.AugMix, policy, interpolation, mean)


class RandomErasing(_OwnRandom):
    """Random erasing (Zhong et al. 2017, torchvision's semantics) of a float32 CHW image: with probability
    ``prob`` a box of area fraction in ``scale`` and aspect in ``ratio`` (log-uniform) is filled with
    ``value`` (per channel) or, for 'random', with standard normal noise."""

    def __init__(self, prob: float, scale: Sequence[float], ratio: Sequence[float], value: Any,
                 max_attempts: int) -> None:
        if not 0.0 <= prob <= 1.0 or not 0.0 < scale[0] <= scale[1] <= 1.0 or not 0.0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"random_erasing: prob in [0, 1], 0 < scale[0] <= scale[1] <= 1, 0 < ratio[0] <= "
                              f"ratio[1]; got prob={prob}, scale={scale}, ratio={ratio}")
        self.prob, self.scale, self.max_attempts = float(prob), (float(scale[0]), float(scale[1])), int(max_attempts)
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.value = value

    def __call__(self, image: np.ndarray) -> np.ndarray:
        box = self._box(image.shape, self.rng)
        if box is None:
            return image
        out = np.array(image, dtype=np.float32, copy=True)
        self._fill(out, box, self.rng)
        return out

    def on_batch(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The same erasing of each CHW image of an NCHW float32 batch (in place), drawing from ``rng``: the
        pipeline runs a trailing erasing once per batch, not once per image through a worker process."""
        for image in images:
            box = self._box(image.shape, rng)
            if box is not None:
                self._fill(image, box, rng)
        return images

    def _box(self, shape: Sequence[int], rng: np.random.Generator) -> Optional[Tuple[int, int, int, int]]:
        """(top, left, height, width) of the box to erase, or None (not this time, or no box fitted)."""
        if rng.random() >= self.prob:
            return None
        _, height, width = shape
        area = height * width
        for _ in range(self.max_attempts):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < h < height and 0 < w < width:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        return None

    def _fill(self, image: np.ndarray, box: Tuple[int, int, int, int], rng: np.random.Generator) -> None:
        top, left, h, w = box
        if isinstance(self.value, str):
            image[:, top:top + h, left:left + w] = rng.standard_normal((image.shape[0], h, w), dtype=np.float32)
        else:
            image[:, top:top + h, left:left + w] = np.asarray(self.value, np.float32).reshape(-1, 1, 1)


def random_erasing(*, prob: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                   ratio: Sequence[float] = (0.3, 3.3), value: Union[float, Sequence[float], str] = 0,
                   max_attempts: int = 10) -> RandomErasing:
    """Erase a random box of a CHW float image (after ``normalize``); ``value='random'`` fills with noise."""
    if isinstance(value, str) and value != "random":
        raise ConfigError(f"random_erasing: value must be a number, a per-channel list or 'random', got {value!r}")
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = [float(v) for v in value]
    return RandomErasing(prob, scale, ratio, value, max_attempts)


def normalize(*, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              channels: int | None = None) -> Any:
    """``(x - mean) / std`` on 0..255 values, then HWC -> CHW float32; a 1-value mean/std fits any channel count.

    Without mean/std: ImageNet's (their channel average for 1-channel images).
    """
    single = channels == 1
    mean = [float(m) for m in (mean if mean is not None else (IMAGENET_GRAY_MEAN if single else IMAGENET_MEAN))]
    std = [float(s) for s in (std if std is not None else (IMAGENET_GRAY_STD if single else IMAGENET_STD))]
    if len(mean) != len(std):
        raise ConfigError(f"normalize: mean has {len(mean)} values but std has {len(std)}; give one per channel")
    if channels is not None and len(mean) != channels:
        if len(mean) != 1:
            raise ConfigError(f"normalize: mean/std have {len(mean)} values for {channels}-channel images; "
                              f"give {channels} values or a single one")
        mean, std = mean * channels, std * channels
    if any(s <= 0 for s in std):
        raise ConfigError(f"normalize: std must be > 0, got {std}")
    return mst.Compose([_build("normalize", msv.Normalize, mean=mean, std=std), msv.HWC2CHW()])


class ToRGB:
    """Grayscale (H, W) or (H, W, 1) to 3 channels by repetition; RGB passes through, RGBA loses alpha."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[:, :, None]
        channels = image.shape[2]
        if channels == 3:
            return image
        if channels == 1:
            return np.repeat(image, 3, axis=2)
        if channels == 4:
            return np.ascontiguousarray(image[:, :, :3])
        raise ConfigError(f"to_rgb: cannot make RGB from {channels} channels (image shape {image.shape})")

    @staticmethod
    def as_mindspore_ops(channels: int) -> list | None:
        """Nothing to do on 3-channel images (the pipeline's own conversion already made them so): [] lets
        the pipeline drop this Python step; None keeps it."""
        return [] if channels == 3 else None


class ToGrayscale:
    """RGB to 1 channel with the ITU-R 601 luma weights (Pillow's 'L'); 1-channel images pass through."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim == 2:
            return image[:, :, None]
        if image.shape[2] == 1:
            return image
        return _pil_ops.from_pil(_pil_ops.to_pil(np.ascontiguousarray(image[:, :, :3])).convert("L"))

    @staticmethod
    def as_mindspore_ops(channels: int) -> list | None:
        """Nothing to do on 1-channel images: [] lets the pipeline drop this Python step; None keeps it."""
        return [] if channels == 1 else None


def to_rgb() -> ToRGB:
    """Grayscale-to-RGB for one-channel data feeding a 3-channel network."""
    return ToRGB()


def to_grayscale() -> ToGrayscale:
    """RGB-to-grayscale for colour data feeding a 1-channel network."""
    return ToGrayscale()


def mixup_cutmix(*, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, cutmix_minmax: Sequence[float] | None = None,
                 label_smoothing: float = 0.0, correct_lam: bool = True) -> MixupCutmix:
    """Batch Mixup/CutMix: ``fn(images NCHW, labels) -> (images, soft labels [N, num_classes])``."""
    return MixupCutmix(num_classes=num_classes, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob,
                       switch_prob=switch_prob, cutmix_minmax=cutmix_minmax, label_smoothing=label_smoothing,
                       correct_lam=correct_lam)
