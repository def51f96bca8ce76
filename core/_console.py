"""What both command lines share: the argument parser's error behaviour, tables, and a closed stdout.

The parsers are argparse (the standard library): the recipe options are generated from the key table,
so a well-kept parser gives ``--help``, ``--key=value`` and exact option matching; only what argparse
cannot know (unknown recipe keys with close matches, ``--model.arg`` component arguments) is ours.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, NoReturn, Sequence

from ._errors import ConfigError

#: the exit code of a command whose reader closed the pipe (``mindplug list | head``): 128 + SIGPIPE
BROKEN_PIPE_EXIT = 141


class Parser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` (one ``error:`` line, exit code 2) instead of printing usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --warmup_epoch must not silently mean --warmup_epochs
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def render_table(rows: Sequence[Sequence[Any]], header: Sequence[str], *, markdown: bool = False) -> str:
    """Rows as aligned text columns, or as a Markdown table."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells + [list(header)]) for i in range(len(header))]
    if markdown:
        def line(row: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

        return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                         + [line(r) for r in cells])
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def guarded(main: Callable[[List[str]], int], argv: List[str]) -> int:
    """``main(argv)``, exiting quietly with 141 when stdout's reader is gone."""
    try:
        return main(argv)
    except BrokenPipeError:
        # Python's recommended recipe: point stdout at devnull so the flush at exit cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
