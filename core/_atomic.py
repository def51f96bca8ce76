"""The one way mindplug writes a file: a temp file beside it, fsync, rename over it, fsync the folder.

A crash at any moment leaves either the old file or the new one, never a torn one; temp files a crash
left behind are named ``.<name>.tmp-<pid>`` and ``clean_stale`` removes them on the next start.

Fault injection for the crash tests: ``MINDPLUG_FAULT=<point>:<n>`` kills the process (SIGKILL, as a
power cut would) at the n-th arrival at a write point, after the new file is written but before it replaces
the old one; ``<point>.after:<n>`` right after the rename. The engine's points: config, runtime, classes,
log, weights, best, best.commit, state.
"""
from __future__ import annotations

import glob
import os
import signal
from typing import Callable, Dict

_TMP_MARK = ".tmp-"
FAULT_ENV = "MINDPLUG_FAULT"
_arrivals: Dict[str, int] = {}


def fault_point(point: str) -> None:
    """Kill the process here if ``MINDPLUG_FAULT`` names this point and arrival (a test hook)."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec or not point:
        return
    _arrivals[point] = _arrivals.get(point, 0) + 1
    name, _, count = spec.rpartition(":")
    if name == point and count.isdigit() and _arrivals[point] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def temp_path(path: str) -> str:
    """Where the new content of ``path`` is written before it replaces ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}{_TMP_MARK}{os.getpid()}{ext}")


def fsync_dir(folder: str) -> None:
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


def atomic_write(path: str, write: Callable[[str], None], *, point: str = "") -> None:
    """``write(temp)`` creates the new file; it then atomically replaces ``path`` (the folder is created).
    ``point`` names the write for fault injection."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        fault_point(point)
        os.replace(tmp, path)
        fsync_dir(folder)
        fault_point(point + ".after" if point else "")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str, *, point: str = "") -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    atomic_write(path, write, point=point)


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


def probe_writable(folder: str, what: str) -> None:
    """Create ``folder`` and write and remove a file in it now, so an unwritable output directory is an error
    before any work, not after the first epoch."""
    from ._errors import CheckpointError

    probe = os.path.join(folder, f".write-probe{_TMP_MARK}{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"mindplug")
        os.remove(probe)
    except OSError as exc:
        raise CheckpointError(f"cannot write to {what} {folder!r}: {exc.strerror or exc}; choose a writable "
                              f"--ckpt_save_dir") from None
