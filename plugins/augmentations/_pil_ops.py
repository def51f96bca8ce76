"""Pillow implementations of the automatic-augmentation families, on HWC uint8 numpy images.

MindSpore's own RandAugment / AutoAugment / TrivialAugmentWide reject 1-channel images and cannot express
magnitude noise (``mstd``) or the increasing-severity op set (``inc1``), and MindSpore 2.10 has no AugMix,
so these are written on Pillow. Randomness comes from Python's ``random`` and ``numpy.random``, both of
which ``mindspore.dataset.config.set_seed`` seeds.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from mindplug._errors import ConfigError

from ._policy import AugMixConfig, AutoAugmentConfig, RandAugmentConfig, TrivialAugmentConfig

LEVEL_DENOM = 10.0
Fill = Tuple[int, ...]

#: resampling filters by name, for geometric ops
PIL_RESAMPLE: Dict[str, int] = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "linear": Image.BILINEAR,
    "bicubic": Image.BICUBIC, "cubic": Image.BICUBIC, "pilcubic": Image.BICUBIC, "area": Image.BOX,
    "lanczos": Image.LANCZOS, "antialias": Image.LANCZOS,
}


def to_pil(image: np.ndarray) -> Image.Image:
    """HWC uint8 (C = 1 or 3) to a Pillow image; other layouts are refused with the fix."""
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.dtype != np.uint8:
        raise ConfigError(f"this augmentation needs an HWC uint8 image with 1 or 3 channels, got shape "
                          f"{tuple(image.shape)} {image.dtype}; put it before 'normalize' and use 'to_rgb' "
                          f"for other channel counts")
    return Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image, "RGB")


def from_pil(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def _fill_for(image: Image.Image, fill: Fill) -> int | Fill:
    return int(round(sum(fill) / len(fill))) if image.mode == "L" else tuple(fill)


def _affine(image: Image.Image, matrix: Tuple[float, ...], fill: Fill, resample: int) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, matrix, resample=resample, fillcolor=_fill_for(image, fill))


def _solarize_add(image: Image.Image, add: float, thresh: int = 128) -> Image.Image:
    lut = [min(255, i + int(add)) if i < thresh else i for i in range(256)]
    return image.point(lut * len(image.getbands()))


def _posterize(image: Image.Image, bits: int) -> Image.Image:
    """Keep the top ``bits`` bits; 0 bits is a black image (Pillow >= 10 refuses bits < 1)."""
    if bits >= 8:
        return image
    if bits <= 0:
        return image.point(lambda _: 0)
    return ImageOps.posterize(image, bits)


def _enhance(kind: Callable[[Image.Image], ImageEnhance._Enhance]) -> Callable[..., Image.Image]:
    return lambda img, factor, fill, resample: kind(img).enhance(factor)


# op name -> fn(img, arg, fill, resample); arg is None for ops without a magnitude
APPLY: Dict[str, Callable[..., Image.Image]] = {
    "Identity": lambda img, arg, fill, resample: img,
    "AutoContrast": lambda img, arg, fill, resample: ImageOps.autocontrast(img),
    "Equalize": lambda img, arg, fill, resample: ImageOps.equalize(img),
    "Invert": lambda img, arg, fill, resample: ImageOps.invert(img),
    "Rotate": lambda img, deg, fill, resample: img.rotate(deg, resample=resample, fillcolor=_fill_for(img, fill)),
    "Posterize": lambda img, bits, fill, resample: _posterize(img, int(bits)),
    "Solarize": lambda img, thresh, fill, resample: ImageOps.solarize(img, thresh),
    "SolarizeAdd": lambda img, add, fill, resample: _solarize_add(img, add),
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda img, f, fill, resample: _affine(img, (1, f, 0, 0, 1, 0), fill, resample),
    "ShearY": lambda img, f, fill, resample: _affine(img, (1, 0, 0, f, 1, 0), fill, resample),
    "TranslateX": lambda img, pct, fill, resample: _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), fill, resample),
    "TranslateY": lambda img, pct, fill, resample: _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), fill, resample),
}


def _signed(value: float) -> float:
    return -value if random.random() > 0.5 else value


# level (0..LEVEL_DENOM) -> op argument, timm's conventions; translations are relative to the image size
def _scaled(top: float, signed: bool) -> Callable[[float], float]:
    return (lambda m: _signed(m / LEVEL_DENOM * top)) if signed else (lambda m: m / LEVEL_DENOM * top)


LEVEL: Dict[str, Callable[[float], float] | None] = {
    "AutoContrast": None, "Equalize": None, "Invert": None, "Identity": None,
    "Rotate": _scaled(30.0, True),
    "Posterize": lambda m: int(m / LEVEL_DENOM * 4),                   # 0..4 bits kept: severity falls with m
    "PosterizeIncreasing": lambda m: 4 - int(m / LEVEL_DENOM * 4),     # 4..0 bits kept: severity rises with m
    "PosterizeOriginal": lambda m: int(m / LEVEL_DENOM * 4) + 4,       # 4..8 bits kept (AutoAugment paper)
    "Solarize": lambda m: int(m / LEVEL_DENOM * 256),
    "SolarizeIncreasing": lambda m: 256 - int(m / LEVEL_DENOM * 256),
    "SolarizeAdd": lambda m: int(m / LEVEL_DENOM * 110),
    "ShearX": _scaled(0.3, True), "ShearY": _scaled(0.3, True),
    "TranslateX": _scaled(0.45, True), "TranslateY": _scaled(0.45, True),
}
for _name in ("Color", "Contrast", "Brightness", "Sharpness"):
    LEVEL[_name] = lambda m: m / LEVEL_DENOM * 1.8 + 0.1                           # 0.1..1.9
    LEVEL[_name + "Increasing"] = lambda m: max(0.1, 1.0 + _signed(m / LEVEL_DENOM * 0.9))  # away from 1.0


def _base(name: str) -> str:
    for suffix in ("Increasing", "Original"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class AugmentOp:
    """One op of a policy: applied with ``prob`` at ``magnitude``, optionally jittered by ``magnitude_std``."""

    def __init__(self, name: str, prob: float, magnitude: float, *, magnitude_std: float = 0.0,
                 magnitude_max: float = LEVEL_DENOM, fill: Fill = (128, 128, 128),
                 resample: int = Image.BILINEAR) -> None:
        self.name, self.prob, self.magnitude = name, prob, magnitude
        self.apply, self.level = APPLY[_base(name)], LEVEL[name]
        self.magnitude_std, self.magnitude_max = magnitude_std, magnitude_max
        self.fill, self.resample = fill, resample

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.prob < 1.0 and random.random() > self.prob:
            return image
        magnitude = self.magnitude
        if self.magnitude_std == math.inf:
            magnitude = random.uniform(0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = random.gauss(magnitude, self.magnitude_std)
        magnitude = max(0.0, min(magnitude, self.magnitude_max))
        arg = self.level(magnitude) if self.level is not None else None
        return self.apply(image, arg, self.fill, self.resample)

    def __repr__(self) -> str:
        return f"AugmentOp({self.name}, p={self.prob}, m={self.magnitude}, mstd={self.magnitude_std})"


class _PilTransform:
    """Base: numpy HWC uint8 in and out, Pillow inside."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return from_pil(self.apply(to_pil(np.asarray(image))))

    def apply(self, image: Image.Image) -> Image.Image:  # pragma: no cover - overridden
        raise NotImplementedError


RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateX",
                       "TranslateY")
# op-choice weights 'w0' (timm's, loosely after the RandAugment paper); keyed by base op name
RAND_WEIGHTS_0 = {"Rotate": 0.3, "ShearX": 0.2, "ShearY": 0.2, "TranslateX": 0.1, "TranslateY": 0.1,
                  "Color": 0.025, "Sharpness": 0.025, "AutoContrast": 0.025, "Solarize": 0.005,
                  "SolarizeAdd": 0.005, "Contrast": 0.005, "Brightness": 0.005, "Equalize": 0.005,
                  "Posterize": 0.0, "Invert": 0.0}


class RandAugment(_PilTransform):
    """RandAugment (Cubuk et al. 2019) with timm's magnitude noise, increasing set and op weights."""

    def __init__(self, config: RandAugmentConfig, *, fill: Fill, resample: int) -> None:
        names = RAND_INCREASING_OPS if config.increasing else RAND_OPS
        self.config = config
        self.ops = [AugmentOp(n, config.prob, config.magnitude, magnitude_std=config.magnitude_std,
                              magnitude_max=config.magnitude_max, fill=fill, resample=resample) for n in names]
        weights = None
        if config.weight_idx is not None:
            raw = np.array([RAND_WEIGHTS_0[_base(n)] for n in names], dtype=np.float64)
            weights = raw / raw.sum()
        self.weights = weights

    def apply(self, image: Image.Image) -> Image.Image:
        # weighted choice draws without replacement, as in timm
        picks = np.random.choice(len(self.ops), self.config.num_layers, replace=self.weights is None,
                                 p=self.weights)
        for index in picks:
            image = self.ops[index](image)
        return image


# (op, probability, magnitude) pairs: the ImageNet policies of AutoAugment (Cubuk et al. 2018)
_ORIGINAL = [
    [("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)], [("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)],
    [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)], [("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)],
    [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)], [("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)],
    [("Rotate", 0.8, 8), ("Color", 0.4, 0)], [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
    [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)], [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)], [("Rotate", 0.8, 8), ("Color", 1.0, 2)],
    [("Color", 0.8, 8), ("Solarize", 0.8, 7)], [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)],
    [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)], [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)], [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
]
# the ImageNet 'v0' policy of the TPU EfficientNet code
_V0 = [
    [("Equalize", 0.8, 1), ("ShearY", 0.8, 4)], [("Color", 0.4, 9), ("Equalize", 0.6, 3)],
    [("Color", 0.4, 1), ("Rotate", 0.6, 8)], [("Solarize", 0.8, 3), ("Equalize", 0.4, 7)],
    [("Solarize", 0.4, 2), ("Solarize", 0.6, 2)], [("Color", 0.2, 0), ("Equalize", 0.8, 8)],
    [("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)], [("ShearX", 0.2, 9), ("Rotate", 0.6, 8)],
    [("Color", 0.6, 1), ("Equalize", 1.0, 2)], [("Invert", 0.4, 9), ("Rotate", 0.6, 0)],
    [("Equalize", 1.0, 9), ("ShearY", 0.6, 3)], [("Color", 0.4, 7), ("Equalize", 0.6, 0)],
    [("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)], [("Solarize", 0.6, 8), ("Color", 0.6, 9)],
    [("Solarize", 0.2, 4), ("Rotate", 0.8, 9)], [("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)],
    [("ShearX", 0.0, 0), ("Solarize", 0.8, 4)], [("ShearY", 0.8, 0), ("Color", 0.6, 4)],
    [("Color", 1.0, 0), ("Rotate", 0.6, 2)], [("Equalize", 0.8, 4), ("Equalize", 0.0, 8)],
    [("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)], [("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)],
    [("Posterize", 0.8, 2), ("Solarize", 0.6, 10)], [("Solarize", 0.6, 8), ("Equalize", 0.6, 1)],
    [("Color", 0.8, 6), ("Rotate", 0.4, 5)],
]


def _with_posterize(policy: List[List[Tuple[str, float, int]]], variant: str) -> List[List[Tuple[str, float, int]]]:
    """The 'r' variants swap in the research posterize (bits removed grow with magnitude)."""
    return [[(variant if _base(n) == "Posterize" else n, p, m) for n, p, m in sub] for sub in policy]


AUTO_POLICY_TABLES = {
    "original": _ORIGINAL, "originalr": _with_posterize(_ORIGINAL, "PosterizeIncreasing"),
    "v0": _V0, "v0r": _with_posterize(_V0, "PosterizeIncreasing"),
}


class AutoAugment(_PilTransform):
    """AutoAugment: one sub-policy (two ops) drawn uniformly per image."""

    def __init__(self, config: AutoAugmentConfig, *, fill: Fill, resample: int) -> None:
        self.config = config
        self.policy = [[AugmentOp(n, p, m, magnitude_std=config.magnitude_std, fill=fill, resample=resample)
                        for n, p, m in sub] for sub in AUTO_POLICY_TABLES[config.policy]]

    def apply(self, image: Image.Image) -> Image.Image:
        for op in random.choice(self.policy):
            image = op(image)
        return image


def _linspace(top: float) -> Callable[[int, int], float]:
    return lambda i, bins: top * i / (bins - 1)


# TrivialAugmentWide (Mueller & Hutter 2021), torchvision's "wide" ranges: op -> (bin -> arg, signed)
# Translation is relative: 32 px at 224 px, so it means the same at any image size.
_TRIVIAL: Dict[str, Tuple[Callable[[int, int], float] | None, bool]] = {
    "Identity": (None, False),
    "ShearX": (_linspace(0.99), True), "ShearY": (_linspace(0.99), True),
    "TranslateX": (_linspace(32.0 / 224.0), True), "TranslateY": (_linspace(32.0 / 224.0), True),
    "Rotate": (_linspace(135.0), True),
    "Brightness": (_linspace(0.99), True), "Color": (_linspace(0.99), True),
    "Contrast": (_linspace(0.99), True), "Sharpness": (_linspace(0.99), True),
    "Posterize": (lambda i, bins: 8 - int(round(i / ((bins - 1) / 6))), False),
    "Solarize": (lambda i, bins: 256.0 - 256.0 * i / (bins - 1), False),
    "AutoContrast": (None, False), "Equalize": (None, False),
}
_ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")


class TrivialAugmentWide(_PilTransform):
    """One op per image, magnitude bin drawn uniformly, sign at random where it applies."""

    def __init__(self, config: TrivialAugmentConfig, *, fill: Fill, resample: int) -> None:
        self.config, self.fill, self.resample = config, fill, resample
        self.names: Sequence[str] = tuple(_TRIVIAL)

    def apply(self, image: Image.Image) -> Image.Image:
        name = random.choice(self.names)
        level, signed = _TRIVIAL[name]
        arg = None
        if level is not None:
            arg = level(random.randrange(self.config.num_magnitude_bins), self.config.num_magnitude_bins)
            if signed:
                arg = _signed(arg)
            if name in _ENHANCE:
                arg = 1.0 + arg
        return APPLY[name](image, arg, self.fill, self.resample)


AUGMIX_OPS = ("AutoContrast", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
              "SharpnessIncreasing", "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
              "ShearX", "ShearY", "TranslateX", "TranslateY")


class AugMix(_PilTransform):
    """AugMix (Hendrycks et al. 2020): Dirichlet-weighted chains, blended with the original by Beta(alpha)."""

    def __init__(self, config: AugMixConfig, *, fill: Fill, resample: int) -> None:
        self.config = config
        self.ops = [AugmentOp(n, 1.0, config.severity, magnitude_std=config.magnitude_std, fill=fill,
                              resample=resample) for n in AUGMIX_OPS]

    def _chain(self, image: Image.Image) -> Image.Image:
        depth = self.config.depth if self.config.depth > 0 else np.random.randint(1, 4)
        for index in np.random.choice(len(self.ops), depth, replace=True):
            image = self.ops[index](image)
        return image

    def apply(self, image: Image.Image) -> Image.Image:
        weights = np.float32(np.random.dirichlet([self.config.alpha] * self.config.width))
        mix = float(np.random.beta(self.config.alpha, self.config.alpha))
        if self.config.blended:
            # one Image.blend per chain, with weights rewritten so the result equals the sum form
            alphas, remaining = [], 1.0
            for w in (weights * mix)[::-1]:        # the last blend keeps its weight, earlier ones are rescaled
                alpha = float(w / remaining) if remaining > 0 else 0.0
                remaining *= 1.0 - alpha
                alphas.append(min(1.0, alpha))
            out = image
            for alpha in alphas[::-1]:
                out = Image.blend(out, self._chain(image), alpha)
            return out
        mixed = np.zeros(np.asarray(image).shape, dtype=np.float32)
        for w in weights:
            mixed += w * np.asarray(self._chain(image), dtype=np.float32)
        mixed = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), image.mode)
        return Image.blend(image, mixed, mix)
