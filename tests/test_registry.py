"""The registry against stand-in plugins: no dependence on what is installed."""
from __future__ import annotations

import subprocess
import sys
import types
import warnings

import pytest

import mindplug
from mindplug import ComponentSpec, hookimpl
from mindplug._discovery import PluginSource, sort_sources
from mindplug._errors import (AmbiguousComponentError, ComponentArgumentError, ComponentImportError,
                              ConfigError, PluginLoadError, UnknownComponentError)
from mindplug._registry import PluginLoadWarning, Registry


def factory_a(num_classes: int = 10, *, depth: int = 2) -> tuple:
    """A factory used as a target."""
    return ("a", num_classes, depth)


def factory_b(**kwargs) -> dict:
    return kwargs


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, specs in hooks.items():
        def impl(_specs=specs):
            return _specs
        impl.__name__ = hook_name
        setattr(module, hook_name, hookimpl(impl))
    return module


def _source(name: str, module: types.ModuleType | Exception, dist: str = "", version: str = "1.0",
            module_name: str = "") -> PluginSource:
    def load():
        if isinstance(module, Exception):
            raise module
        return module
    return PluginSource(name, module_name or f"fake_{name}", dist or f"dist-{name}", version, loader=load)


def _registry(*sources: PluginSource, env=None) -> Registry:
    return Registry(sources=lambda: sort_sources(list(sources)), env=env or {})


MODELS = [ComponentSpec("net_a", "model", factory_a, "net a", tags=("cnn",)),
          ComponentSpec("net_b", "model", factory_b, "net b")]


def test_discovers_lists_and_creates():
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=MODELS)))
    assert reg.list() == ["net_a", "net_b"]
    assert reg.list("*_a") == ["net_a"]
    assert reg.list(["net*"], exclude="*b") == ["net_a"]
    assert reg.list("alpha:*") == ["net_a", "net_b"]
    assert reg.list("alph*") == []
    assert reg.list(kind="optimizer") == []
    assert reg.create("net_a", num_classes=5) == ("a", 5, 2)
    assert reg.create("alpha:net_a", depth=3) == ("a", 10, 3)
    assert reg.create("NET_A") == ("a", 10, 2)  # case-insensitive
    assert [p.name for p in reg.plugins] == ["alpha"]


def test_unknown_name_suggests_close_matches_and_other_kind():
    opt = [ComponentSpec("momentum", "optimizer", factory_b, "sgd")]
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=MODELS, mindplug_optimizers=opt)))
    with pytest.raises(UnknownComponentError, match=r"did you mean 'net_a'"):
        reg.create("net_aa")
    with pytest.raises(UnknownComponentError, match=r"'momentum' is an optimizer.*kind='optimizer'"):
        reg.create("momentum")
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        reg.create("net_a", kind="modle")


def test_kwargs_checked_against_signature_before_call():
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=MODELS)))
    with pytest.raises(ComponentArgumentError, match=r"'num_class' \(did you mean 'num_classes'\?\).*"
                                                     r"Accepted arguments: num_classes, depth"):
        reg.create("net_a", num_class=3)
    assert reg.create("net_b", anything=1) == {"anything": 1}  # **kwargs factories take anything


def test_missing_required_argument_is_named():
    def needs(params, lr=0.1):
        return params, lr
    reg = _registry(_source("o", _module("o", mindplug_optimizers=[ComponentSpec("x", "optimizer", needs)])))
    with pytest.raises(ComponentArgumentError, match="missing a required argument: 'params'"):
        reg.create("x", kind="optimizer", lr=0.2)


def test_broken_plugin_is_isolated_and_explained(tmp_path, monkeypatch):
    broken_src = tmp_path / "broken_pkg.py"
    broken_src.write_text("import does_not_exist\nSPECS = ['resnet_broken']\n"
                          "NAMES = ('resnet_broken',)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=MODELS)),
                    _source("broken", ModuleNotFoundError("No module named 'does_not_exist'"),
                            dist="broken-dist", version="0.3", module_name="broken_pkg"))
    with pytest.warns(PluginLoadWarning, match=r"broken-dist 0.3.*does_not_exist"):
        assert reg.list() == ["net_a", "net_b"]
    assert [f.name for f in reg.failures] == ["broken"]
    with pytest.raises(UnknownComponentError, match=r"probably provided by a plugin that did not load: "
                                                    r"plugin 'broken' \(broken-dist 0.3\) failed to import"):
        reg.create("resnet_broken")
    with pytest.raises(UnknownComponentError, match=r"1 plugin\(s\) failed to load and may provide it"):
        reg.create("other_net")


def test_warning_is_emitted_once():
    reg = _registry(_source("bad", ImportError("boom")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.list()
        reg.list()
        reg.list(kind="loss")
    assert len([w for w in caught if issubclass(w.category, PluginLoadWarning)]) == 1


def test_strict_mode_raises():
    reg = _registry(_source("bad", ImportError("boom")), env={"MINDPLUG_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginLoadError, match="boom"):
        reg.list()


def test_disable_autoload_keeps_builtins_only():
    builtin = _source("core", _module("core", mindplug_models=MODELS), dist="mindplug")
    extra = _source("extra", _module("extra", mindplug_models=[ComponentSpec("x", "model", factory_b)]))
    reg = _registry(builtin, extra, env={"MINDPLUG_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert reg.list() == ["net_a", "net_b"]


def test_allow_and_block_lists():
    one = _source("one", _module("one", mindplug_models=[ComponentSpec("x", "model", factory_b)]))
    two = _source("two", _module("two", mindplug_models=[ComponentSpec("y", "model", factory_b)]),
                  dist="second-dist")
    reg = _registry(one, two)
    reg.configure(block=["second-dist"])
    assert reg.list() == ["x"]
    reg.configure(allow=["tw*"])
    assert reg.list() == ["y"]


def test_duplicate_names_are_ambiguous_until_chosen():
    one = _source("one", _module("one", mindplug_models=[ComponentSpec("net", "model", factory_a)]), version="1.2")
    two = _source("two", _module("two", mindplug_models=[ComponentSpec("net", "model", factory_b)]), version="2.0")
    reg = _registry(two, one)  # install order must not decide
    assert reg.list() == ["one:net", "two:net"]
    with pytest.raises(AmbiguousComponentError) as err:
        reg.create("net")
    text = str(err.value)
    assert "'one:net' from dist-one 1.2" in text and "'two:net' from dist-two 2.0" in text
    assert "prefer:" in text
    assert reg.create("two:net", k=1) == {"k": 1}
    reg.configure(prefer={"net": "one"})
    assert reg.create("net") == ("a", 10, 2)
    reg.configure(prefer={"net": "dist-two"})
    assert reg.create("net") == {}


def test_api_version_incompatible_is_a_recorded_failure():
    module = _module("future", mindplug_models=[ComponentSpec("z", "model", factory_b)])
    module.MINDPLUG_API_REQUIRES = ">=2"
    reg = _registry(_source("future", module))
    with pytest.warns(PluginLoadWarning, match="requires mindplug API >=2"):
        assert reg.list() == []
    assert reg.failures[0].stage == "check its API version"


@pytest.mark.parametrize("bad, message", [
    ("not a spec", "hooks return mindplug.ComponentSpec"),
    (ComponentSpec("x", "optimizer", factory_b), "must be 'model'"),
    (ComponentSpec("a:b", "model", factory_b), "invalid component name"),
    (ComponentSpec("x", "model", "no_colon"), "'package.module:attr'"),
])
def test_invalid_specs_fail_that_plugin_only(bad, message):
    good = _source("good", _module("good", mindplug_models=[ComponentSpec("ok", "model", factory_b)]))
    reg = _registry(good, _source("bad", _module("bad", mindplug_models=[ComponentSpec("fine", "model", factory_b),
                                                                        bad])))
    with pytest.warns(PluginLoadWarning, match=message):
        assert reg.list() == ["ok"]


def test_misspelled_hook_is_reported():
    module = _module("typo", mindplug_modles=[ComponentSpec("x", "model", factory_b)])
    reg = _registry(_source("typo", module))
    with pytest.warns(PluginLoadWarning, match="unknown hook 'mindplug_modles'.*mindplug_models"):
        reg.list()


def test_deterministic_order():
    sources = [_source(n, _module(n), dist=d) for n, d in [("b", "zeta"), ("a", "zeta"), ("c", "Alpha")]]
    assert [s.name for s in sort_sources(sources)] == ["c", "a", "b"]


def test_lazy_target_import_error_names_the_plugin():
    spec = ComponentSpec("ghost", "model", "mindplug_no_such_module_xyz:net")
    reg = _registry(_source("ghosts", _module("ghosts", mindplug_models=[spec]), dist="ghost-dist", version="9"))
    assert reg.info("ghost").signature == "(...)"
    stated = ComponentSpec("ghost2", "model", "mindplug_no_such_module_xyz:net", metadata={"signature": "(a=1)"})
    reg2 = _registry(_source("g2", _module("g2", mindplug_models=[stated])))
    assert reg2.info("ghost2").signature == "(a=1)"
    with pytest.raises(ComponentImportError, match=r"'ghosts:ghost' from ghost-dist 9 could not be loaded"):
        reg.create("ghost")


def test_info_reads_signature_without_importing(tmp_path, monkeypatch):
    (tmp_path / "heavy_target_mod.py").write_text(
        "import sys\nsys.modules['heavy_target_was_imported'] = sys\n"
        "def make(num_classes: int = 3, *, width: int = 8):\n    '''Build it.'''\n    return num_classes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ComponentSpec("heavy", "model", "heavy_target_mod:make", tags=("t",))
    reg = _registry(_source("h", _module("h", mindplug_models=[spec])))
    info = reg.info("heavy")
    assert info.signature == "(num_classes: int=3, *, width: int=8)"
    assert info.description == "Build it."
    assert info.canonical_id == "h:heavy" and info.distribution == "dist-h"
    assert "heavy_target_was_imported" not in sys.modules
    assert reg.create("heavy", width=2) == 3
    assert "heavy_target_was_imported" in sys.modules


def test_build_from_config_mapping():
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=MODELS)))
    assert reg.build({"type": "net_a", "depth": 4}) == ("a", 10, 4)
    with pytest.raises(ConfigError, match="no 'type' key"):
        reg.build({"depth": 4}, path="model")
    with pytest.raises(ComponentArgumentError, match=r"^model: .*'dpeth'"):
        reg.build({"type": "net_a", "dpeth": 4}, path="model")
    with pytest.raises(UnknownComponentError, match=r"^model: Unknown model 'nt_a'"):
        reg.build({"type": "nt_a"}, path="model")


def test_register_in_process_replaces_on_rerun():
    reg = _registry()
    reg.register_spec(ComponentSpec("mine", "loss", factory_a))
    assert reg.create("mine", kind="loss") == ("a", 10, 2)
    reg.register_spec(ComponentSpec("mine", "loss", factory_b))
    assert reg.create("local:mine", kind="loss") == {}


def test_public_register_decorator():
    @mindplug.register(kind="scheduler", name="test_only_flat")
    def flat(*, lr: float, steps_per_epoch: int, num_epochs: int) -> list:
        """Flat schedule for a test."""
        return [lr] * steps_per_epoch * num_epochs
    try:
        assert mindplug.create("test_only_flat", kind="scheduler", lr=0.5, steps_per_epoch=2, num_epochs=1) == [0.5, 0.5]
        assert mindplug.info("test_only_flat", kind="scheduler").description == "Flat schedule for a test."
        assert "test_only_flat" in mindplug.list(kind="scheduler")
    finally:
        from mindplug._registry import default_registry
        default_registry().unregister_local("test_only_flat", "scheduler")


def test_listing_does_not_import_mindspore():
    code = ("import mindplug, sys; mindplug.list(kind=None); [mindplug.info(n, k) for k in mindplug.KINDS "
            "for n in mindplug.list(kind=k)]; print('mindspore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_fallback_component_keeps_a_shared_bare_name_with_the_other_provider():
    zoo = [ComponentSpec("net_a", "model", factory_b, "zoo copy of net_a", fallback=True),
           ComponentSpec("zoo_only", "model", factory_b, "only in the zoo", fallback=True)]
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=MODELS)),
                    _source("zoo", _module("zoo", mindplug_models=zoo)))
    assert reg.resolve("net_a").canonical_id == "alpha:net_a"
    assert reg.resolve("zoo:net_a").canonical_id == "zoo:net_a"
    assert reg.resolve("zoo_only").canonical_id == "zoo:zoo_only"  # alone, a fallback answers its bare name
    assert reg.list() == ["net_a", "net_b", "zoo:net_a", "zoo_only"]
    both = [ComponentSpec("net_a", "model", factory_b, "a second fallback", fallback=True)]
    reg = _registry(_source("zoo", _module("zoo", mindplug_models=zoo)),
                    _source("zoo2", _module("zoo2", mindplug_models=both)))
    with pytest.raises(AmbiguousComponentError):
        reg.resolve("net_a")  # two fallbacks and nobody else: still ambiguous


def test_strict_mode_fails_every_access_not_only_the_first():
    reg = _registry(_source("bad", ImportError("boom")), env={"MINDPLUG_STRICT_PLUGINS": "1"})
    for _ in range(3):
        with pytest.raises(PluginLoadError, match="boom"):
            reg.create("net_a")


def test_selection_typos_are_reported():
    one = _source("googlenet", _module("one", mindplug_models=MODELS))
    reg = _registry(one)
    reg.configure(block=["googlente"])
    with pytest.warns(PluginLoadWarning, match=r"plugins.block: no installed plugin.*'googlente'.*did you mean "
                                               r"'googlenet'"):
        reg.list()
    strict = _registry(one, env={"MINDPLUG_STRICT_PLUGINS": "1"})
    strict.configure(allow=["nope*"])
    with pytest.raises(PluginLoadError, match="plugins.allow"):
        strict.list()
    two = _source("two", _module("two", mindplug_models=[ComponentSpec("net_a", "model", factory_b)]))
    reg = _registry(one, two)
    reg.configure(prefer={"net_a": "tow"})
    with pytest.raises(ConfigError, match=r"plugins.prefer: net_a: 'tow' is not one of its providers.*'two'"):
        reg.resolve("net_a")


def test_unknown_name_under_disabled_autoload_names_the_variable():
    builtin = _source("core", _module("core", mindplug_models=MODELS), dist="mindplug")
    reg = _registry(builtin, env={"MINDPLUG_DISABLE_PLUGIN_AUTOLOAD": "1"})
    with pytest.raises(UnknownComponentError, match="MINDPLUG_DISABLE_PLUGIN_AUTOLOAD is set"):
        reg.resolve("tinynet")


def test_info_looks_in_every_kind_unless_told():
    losses = [ComponentSpec("focal", "loss", factory_b, "a loss")]
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=MODELS, mindplug_losses=losses)))
    assert reg.info("focal").kind == "loss"
    assert reg.info("net_a").kind == "model"
    with pytest.raises(UnknownComponentError, match="'focal' is a loss"):
        reg.info("focal", kind="model")


def test_defaults_are_declared_by_plugins():
    specs = [ComponentSpec("net_a", "model", factory_a, default=True), ComponentSpec("net_b", "model", factory_b)]
    reg = _registry(_source("alpha", _module("alpha", mindplug_models=specs)))
    assert reg.default("model").canonical_id == "alpha:net_a"
    with pytest.raises(ConfigError, match="no loss given.*no loaded plugin declares a default loss"):
        reg.default("loss")
    other = _source("beta", _module("beta", mindplug_models=[ComponentSpec("c", "model", factory_b, default=True)]))
    with pytest.raises(AmbiguousComponentError, match="2 plugins declare a default model"):
        _registry(_source("alpha", _module("alpha", mindplug_models=specs)), other).default("model")
