"""The shipped catalogue of MindCV's models, turned into mindplug spec records without importing MindCV.

``data/mindcv-<version>.json`` is written by ``tools/generate.py`` from an installed MindCV: the model
names, each model's ``default_cfg`` verbatim and the arguments its factory accepts. Listing reads only
that file and the installed MindCV's version from its package metadata, so it costs milliseconds.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mindplug import IMAGENET_MEAN, IMAGENET_STD, ComponentSpec, MindplugError, WeightsSpec

DATA_DIR = Path(__file__).resolve().parent / "data"
TARGET_MODULE = "mindplug_mindcv.factories"
#: MindCV's defaults where a ``default_cfg`` leaves a field out (``mindcv.data`` eval transform).
DEFAULT_INPUT_SIZE = (3, 224, 224)
DEFAULT_MEAN = IMAGENET_MEAN
DEFAULT_STD = IMAGENET_STD
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bilinear"
WEIGHTS_TAG = "imagenet1k"


class CatalogueError(MindplugError, LookupError):
    """No catalogue fits the installed MindCV (not installed, or a version the bridge does not ship)."""


def shipped_versions() -> List[str]:
    return sorted(p.stem[len("mindcv-"):] for p in DATA_DIR.glob("mindcv-*.json"))


def installed_version() -> str:
    """The installed MindCV's version, from its package metadata (MindCV itself is not imported)."""
    try:
        return importlib.metadata.version("mindcv")
    except importlib.metadata.PackageNotFoundError:
        raise CatalogueError(
            "MindCV is not installed, so the bridge has no models to offer: "
            f"`pip install mindcv=={shipped_versions()[-1]}` (or uninstall mindplug-mindcv)") from None


@functools.lru_cache(maxsize=None)
def load(version: Optional[str] = None) -> Dict[str, Any]:
    """The catalogue of ``version`` (default: the installed MindCV's), as shipped."""
    version = version or installed_version()
    path = DATA_DIR / f"mindcv-{version}.json"
    if not path.is_file():
        raise CatalogueError(
            f"mindplug-mindcv ships model catalogues for MindCV {', '.join(shipped_versions())}, but MindCV "
            f"{version} is installed: install one of those (`pip install mindcv=={shipped_versions()[-1]}`), "
            "or regenerate the catalogue for this version with bridges/mindcv/tools/generate.py")
    with open(path, encoding="utf-8") as handle:
        catalogue = json.load(handle)
    catalogue["by_name"] = {entry["name"]: entry for entry in catalogue["models"]}
    return catalogue


def entry(name: str) -> Dict[str, Any]:
    """The catalogue entry of one model; ``KeyError`` when MindCV has no such model."""
    return load()["by_name"][name]


def _to_255(values: Optional[List[float]], default: Tuple[float, ...]) -> Tuple[float, ...]:
    """mindplug normalises on the 0..255 scale; a few MindCV cfgs write mean/std on the 0..1 scale."""
    if not values:
        return default
    if max(values) <= 1.0:
        return tuple(float(v) * 255 for v in values)
    return tuple(float(v) for v in values)


def weights_of(cfg: Mapping[str, Any]) -> Tuple[WeightsSpec, ...]:
    """MindCV's published weights of one model as a record: the cache's file name is the URL's last part.

    MindCV publishes no full sha256; most file names carry its first 8 hex digits, which the cache checks.
    """
    url = cfg.get("url") or ""
    if not url:
        return ()
    return (WeightsSpec(
        tag=WEIGHTS_TAG,
        file_name=url.rstrip("/").rsplit("/", 1)[-1],
        sha256=None,
        source=url,
        num_classes=int(cfg.get("num_classes", 1000)),
        input_size=tuple(cfg.get("input_size") or DEFAULT_INPUT_SIZE),
        mean=_to_255(cfg.get("mean"), DEFAULT_MEAN),
        std=_to_255(cfg.get("std"), DEFAULT_STD),
        eval_transform="resize_center_crop",
        crop_pct=float(cfg.get("crop_pct", DEFAULT_CROP_PCT)),
        interpolation=str(cfg.get("interpolation", DEFAULT_INTERPOLATION)),
    ),)


def description_of(item: Mapping[str, Any], version: str) -> str:
    """Facts from the catalogue (MindCV's docstrings are sometimes copied between models and wrong)."""
    cls = item["class"].rpartition(":")[2] or item["name"]
    cfg = item["default_cfg"]
    size = (cfg.get("input_size") or DEFAULT_INPUT_SIZE)[-1]
    text = f"{cls} from MindCV {version} (mindcv.models.{item['module']}), {size} px"
    text += ", ImageNet-1k weights published" if cfg.get("url") else ", no published weights"
    if item.get("ignored_args"):
        text += f"; MindCV ignores {' and '.join(item['ignored_args'])}"
    if item.get("broken"):
        text += f"; MindCV cannot build it: {item['broken']}"
    return text


def spec_of(item: Mapping[str, Any], version: str) -> ComponentSpec:
    cfg = item["default_cfg"]
    metadata: Dict[str, Any] = {
        "signature": item["signature"],
        "mindcv_version": version,
        "mindcv_module": f"mindcv.models.{item['module']}",
        "mindcv_class": item["class"],
        "default_input_size": tuple(cfg.get("input_size") or DEFAULT_INPUT_SIZE),
    }
    for key in ("first_conv", "classifier", "fixed_input_size"):
        if key in cfg:
            metadata[key] = cfg[key]
    if item.get("broken"):
        metadata["broken"] = item["broken"]
    if item.get("ignored_args"):
        metadata["ignored_args"] = tuple(item["ignored_args"])
    weights = weights_of(cfg)
    tags = ("mindcv", item["module"], "classification") + (("pretrained",) if weights else ())
    # fallback: a bare name another plugin also provides (googlenet) stays that plugin's
    return ComponentSpec(item["name"], "model", f"{TARGET_MODULE}:{item['name']}",
                         description=description_of(item, version), tags=tags, metadata=metadata,
                         weights=weights, fallback=True)


def model_specs(version: Optional[str] = None) -> List[ComponentSpec]:
    """One spec per MindCV model, in MindCV's order (``mindcv.list_models()``)."""
    catalogue = load(version)
    return [spec_of(item, catalogue["mindcv_version"]) for item in catalogue["models"]]


def names(version: Optional[str] = None) -> List[str]:
    return [item["name"] for item in load(version)["models"]]

