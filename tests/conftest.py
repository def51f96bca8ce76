"""Fixtures shared by the test files. MindSpore is imported only by the fixtures that need it."""
from __future__ import annotations

from typing import Iterator

import pytest

MODE_NAMES = ("graph", "pynative")


@pytest.fixture(params=MODE_NAMES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once in GRAPH and once in PYNATIVE mode, restoring the previous mode after."""
    import mindspore as ms

    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=previous)


@pytest.fixture
def kernels_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that compare the kernels with native ops, whatever MINDPLUG_KERNELS the shell has."""
    monkeypatch.delenv("MINDPLUG_KERNELS", raising=False)
