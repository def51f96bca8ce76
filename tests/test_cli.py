"""The `mindplug` command's registry subcommands, on a stand-in registry and on the installed one."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from mindplug import ComponentSpec, WeightsSpec, _cli, hookimpl
from mindplug._discovery import PluginSource
from mindplug._registry import Registry


def make_net(num_classes: int = 10, drop_rate: float = 0.2):
    """A stand-in model."""
    return num_classes


def _registry(with_broken: bool = False) -> Registry:
    module = types.ModuleType("fake_models")

    @hookimpl
    def mindplug_models():
        return [ComponentSpec("fakenet", "model", make_net, "fake net",
                              weights=(WeightsSpec("in1k", "fake.ckpt", metrics={"top1": 70.0}),))]

    @hookimpl
    def mindplug_losses():
        return [ComponentSpec("CE", "loss", make_net, "cross entropy")]

    module.mindplug_models = mindplug_models
    module.mindplug_losses = mindplug_losses
    sources = [PluginSource("fake", "fake_models", "fake-dist", "1.0", loader=lambda: module)]
    if with_broken:
        def fail():
            raise ImportError("broken on purpose")
        sources.append(PluginSource("bad", "bad_mod", "bad-dist", "0.1", loader=fail))
    return Registry(sources=lambda: sources, env={})


@pytest.fixture
def use(monkeypatch):
    def install(registry: Registry) -> Registry:
        monkeypatch.setattr(_cli, "default_registry", lambda: registry)
        return registry
    return install


def test_list_all_kinds_and_filters(use, capsys):
    use(_registry())
    assert _cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fakenet" in out and "CE" in out
    assert _cli.main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    assert "CE" in out and "fakenet" not in out
    assert _cli.main(["list", "fake*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"kind": "model", "name": "fakenet", "plugin": "fake", "description": "fake net"}]
    assert _cli.main(["list", "model", "zzz*"]) == 0
    assert "no components match" in capsys.readouterr().out


def test_info_shows_provider_signature_weights(use, capsys):
    use(_registry())
    assert _cli.main(["info", "fakenet"]) == 0
    out = capsys.readouterr().out
    assert "fake:fakenet" in out and "fake-dist 1.0" in out
    assert "fakenet(num_classes: int = 10, drop_rate: float = 0.2)" in out
    assert "fake.ckpt" in out and "top1" in out
    assert _cli.main(["info", "ce", "--json"]) == 0  # found in the loss kind, case-insensitively
    assert json.loads(capsys.readouterr().out)["kind"] == "loss"


def test_unknown_name_is_a_clean_error(use, capsys):
    use(_registry())
    assert _cli.main(["info", "fakenett"]) == 2
    assert "did you mean 'fakenet'" in capsys.readouterr().err


def test_plugins_and_doctor_report_failures(use, capsys):
    use(_registry(with_broken=True))
    with pytest.warns(UserWarning):
        assert _cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "fake-dist" in out and "FAILED plugin 'bad' (bad-dist 0.1) failed to import" in out
    assert _cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  plugin 'bad'" in out and "1 problem(s) found" in out


def test_doctor_passes_on_a_healthy_registry(use, capsys):
    use(_registry())
    assert _cli.main(["doctor"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_console_script_lists_builtins_without_mindspore():
    code = ("import sys; from mindplug._cli import main; main(['list']); "
            "print('MINDSPORE', 'mindspore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "MINDSPORE False" in out.stdout


def test_list_into_a_closed_pipe_exits_quietly():
    # `mindplug list | head -1`: the reader is gone before the table is written
    proc = subprocess.Popen([sys.executable, "-m", "mindplug", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_doctor_flags_a_plugin_that_imports_mindspore(use, capsys, monkeypatch):
    heavy = types.ModuleType("heavy_plugin")

    def load():
        monkeypatch.setitem(sys.modules, "mindspore", types.ModuleType("mindspore"))
        return heavy

    monkeypatch.delitem(sys.modules, "mindspore", raising=False)
    use(Registry(sources=lambda: [PluginSource("heavy", "heavy_plugin", "heavy-dist", "1", loader=load)], env={}))
    assert _cli.main(["doctor"]) == 1
    assert "FAIL  heavy imports mindspore at import time" in capsys.readouterr().out


def test_doctor_on_the_installed_builtins_is_clean():
    out = subprocess.run([sys.executable, "-m", "mindplug", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "C++ kernels built" in out.stdout and "no problems found" in out.stdout
    assert out.stdout.count("API >=1,<2") == 6


def test_doctor_fails_a_bare_name_that_two_plugins_share(use, capsys):
    def module(name: str, **specs) -> types.ModuleType:
        mod = types.ModuleType(name)

        @hookimpl
        def mindplug_models():
            return [ComponentSpec("net", "model", make_net, "a net", **specs)]

        mod.mindplug_models = mindplug_models
        return mod

    clash = [PluginSource("one", "one", "one-dist", "1", loader=lambda: module("one")),
             PluginSource("two", "two", "two-dist", "1", loader=lambda: module("two"))]
    use(Registry(sources=lambda: clash, env={}))
    assert _cli.main(["doctor"]) == 1
    assert "FAIL  model 'net' is provided by" in capsys.readouterr().out
    zoo = [clash[0], PluginSource("zoo", "zoo", "zoo-dist", "1", loader=lambda: module("zoo", fallback=True))]
    use(Registry(sources=lambda: zoo, env={}))
    assert _cli.main(["doctor"]) == 0
    assert "the bare name means 'one:net'" in capsys.readouterr().out


def test_a_misspelt_kind_is_an_error_not_an_empty_list(use, capsys):
    use(_registry())
    assert _cli.main(["list", "modles"]) == 2
    assert "did you mean 'models'" in capsys.readouterr().err
    assert _cli.main(["list", "zzz*"]) == 0  # a pattern that matches nothing is not an error
