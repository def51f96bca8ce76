"""The one way mindplug writes a file: a temp file beside it, fsync, rename over it, fsync the folder.

A crash at any moment leaves either the old file or the new one, never a torn one; temp files a crash
left behind are named ``.<name>.tmp-<pid>`` and ``clean_stale`` removes them on the next start.
"""
from __future__ import annotations

import glob
import os
from typing import Callable

_TMP_MARK = ".tmp-"


def temp_path(path: str) -> str:
    """Where the new content of ``path`` is written before it replaces ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}{_TMP_MARK}{os.getpid()}{ext}")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(temp)`` creates the new file; it then atomically replaces ``path`` (the folder is created)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    atomic_write(path, write)


def clean_stale(folder: str) -> list[str]:
    """Remove temp files of processes that no longer run; returns what was removed."""
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".*{_TMP_MARK}*")):
        pid_text = os.path.basename(tmp).rpartition(_TMP_MARK)[2].partition(".")[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
            try:
                os.remove(tmp)
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
