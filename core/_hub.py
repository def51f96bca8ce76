"""The local weights cache behind ``pretrained=True``: a documented folder, never a download.

Weights live in ``$MINDPLUG_HOME/weights/<file_name>`` (``MINDPLUG_HOME`` defaults to
``$XDG_CACHE_HOME/mindplug``, i.e. ``~/.cache/mindplug``). A file is used only after its sha256
(or, when only that is known, the 8-hex-digit sha256 prefix in its MindCV-style name) checks out.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Optional

from ._errors import CheckpointError
from ._spec import WeightsSpec

#: MindCV names weights ``<model>-<first 8 hex of sha256>[-<tag>].ckpt``.
_NAME_HASH = re.compile(r"-([0-9a-f]{8})(?=[-.])")


def mindplug_home() -> Path:
    """The cache root: ``$MINDPLUG_HOME``, else ``$XDG_CACHE_HOME/mindplug``, else ``~/.cache/mindplug``."""
    explicit = os.environ.get("MINDPLUG_HOME")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mindplug"


def weights_path(weights: WeightsSpec) -> Path:
    """Where the cache expects ``weights`` (the file need not exist)."""
    return mindplug_home() / "weights" / weights.file_name


def name_hash_prefix(file_name: str) -> Optional[str]:
    """The sha256 prefix a MindCV-style file name carries (``googlenet-de74c31d-910v2.ckpt`` -> ``de74c31d``)."""
    match = _NAME_HASH.search(file_name)
    return match.group(1) if match else None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_weights(weights: WeightsSpec) -> Path:
    """The verified local file of ``weights``; a clear ``CheckpointError`` when absent or corrupt."""
    path = weights_path(weights)
    where = f" (published at {weights.source})" if weights.source else ""
    if not path.is_file():
        raise CheckpointError(
            f"pretrained weights '{weights.tag}' are not in the local cache: put the file "
            f"{weights.file_name!r} at {str(path)!r}{where}; mindplug never downloads. Set MINDPLUG_HOME "
            "to use another cache folder, or start from a checkpoint file with --ckpt_path instead")
    expected = weights.sha256 or name_hash_prefix(weights.file_name)
    if expected:
        actual = sha256_of(path)
        if not actual.startswith(expected.lower()):
            what = "sha256" if weights.sha256 else "sha256 prefix (from its file name)"
            raise CheckpointError(
                f"cached weights {str(path)!r} fail the {what} check: expected {expected}, got "
                f"{actual[:len(expected)]}; the file is corrupt, truncated or another file: replace it{where}")
    return path
