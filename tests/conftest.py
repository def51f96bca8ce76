"""Fixtures shared by the test files. MindSpore is imported only by the fixtures that need it."""
from __future__ import annotations

import os
import sys
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


_exit_status = {"code": 0}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leaves without the interpreter's shutdown once the summary is printed: MindSpore's ``Cell.__del__``
    raises for every cell still alive then, and those thousands of lines buried the summary in CI's log."""
    if "mindspore" in sys.modules and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])
