"""Checkpoint reading/loading (strict by default) and the pretrained-weights cache."""
from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import nn  # noqa: E402

import mindplug  # noqa: E402
import mindplug.plugins.googlenet as plugin  # noqa: E402
from mindplug._checkpoint import (fold_input_channels, is_training_state, load_into,  # noqa: E402
                                  read_checkpoint)
from mindplug._errors import CheckpointError, ConfigError  # noqa: E402
from mindplug._hub import cached_weights, mindplug_home, name_hash_prefix, weights_path  # noqa: E402
from mindplug.plugins.googlenet.model import googlenet  # noqa: E402


def _x(batch: int = 2, size: int = 32, channels: int = 3) -> "ms.Tensor":
    return ms.Tensor(np.random.default_rng(3).standard_normal((batch, channels, size, size), np.float32))


def _logits(net, x):
    net.set_train(False)
    return net(x).asnumpy()


def _save(entries: dict, path: Path) -> Path:
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in entries.items()], str(path))
    return path


def _state(net) -> dict:
    return {n: p.asnumpy() for n, p in net.parameters_dict().items()}


class Tiny(nn.Cell):
    """A two-layer net for the generic loader tests."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Dense(4, 5)
        self.head = nn.Dense(5, classes)

    def construct(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def source_net():
    ms.set_seed(11)
    return googlenet(num_classes=1000)


@pytest.fixture(scope="module")
def ckpt(source_net, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "googlenet.ckpt"
    ms.save_checkpoint(source_net, str(path))
    return path


# --- round trip -----------------------------------------------------------------------------------------

def test_round_trip_reproduces_logits_exactly(source_net, ckpt):
    x = _x()
    loaded = googlenet(num_classes=1000, checkpoint_path=str(ckpt))
    assert np.array_equal(_logits(loaded, x), _logits(source_net, x))
    assert loaded.load_report.complete and len(loaded.load_report.loaded) == 59
    via_registry = mindplug.create("googlenet", checkpoint_path=str(ckpt))
    assert np.array_equal(_logits(via_registry, x), _logits(source_net, x))


def test_read_checkpoint_returns_numpy_by_name(source_net, ckpt):
    state = read_checkpoint(ckpt)
    assert set(state) == set(source_net.parameters_dict())
    assert isinstance(state["conv1.conv.weight"], np.ndarray)
    assert np.array_equal(state["classifier.bias"], source_net.classifier.bias.asnumpy())


def test_training_state_entries_are_not_unexpected(source_net, tmp_path):
    entries = _state(source_net)
    entries.update({"moments.conv1.conv.weight": np.zeros((64, 3, 7, 7), np.float32),
                    "learning_rate": np.array(0.1, np.float32), "global_step": np.array([7], np.int32),
                    "scale_sense": np.array(1024.0, np.float32), "momentum": np.array(0.9, np.float32)})
    net = googlenet(checkpoint_path=str(_save(entries, tmp_path / "train.ckpt")))
    assert net.load_report.complete
    assert sorted(net.load_report.training_state) == sorted(
        ["moments.conv1.conv.weight", "learning_rate", "global_step", "scale_sense", "momentum"])
    assert is_training_state("moment1.fc.weight") and not is_training_state("moments_head.weight")


# --- file errors ----------------------------------------------------------------------------------------

def test_missing_file_is_an_error_never_a_random_model(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="not found.*nope.ckpt"):
        googlenet(checkpoint_path=str(path))
    with pytest.raises(CheckpointError, match="directory"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_unreadable_files(ckpt, tmp_path, damage):
    data = ckpt.read_bytes()
    blob = {"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 64}[damage]
    bad = tmp_path / f"{damage}.ckpt"
    bad.write_bytes(blob)
    with pytest.raises(CheckpointError) as err:
        googlenet(checkpoint_path=str(bad))
    assert str(bad) in str(err.value)
    assert ("empty" if damage == "empty" else "unreadable or truncated") in str(err.value)


# --- fit errors (strict) and strict=False ---------------------------------------------------------------

def test_missing_parameters(source_net, tmp_path):
    entries = _state(source_net)
    del entries["inception5b.b1.conv.weight"]
    path = _save(entries, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"1 network parameters missing.*inception5b\.b1\.conv\.weight") \
            as err:
        googlenet(checkpoint_path=str(path))
    assert str(path) in str(err.value) and "strict=False" in str(err.value)
    net = googlenet(checkpoint_path=str(path), strict=False)
    assert net.load_report.missing == ["inception5b.b1.conv.weight"]
    assert np.array_equal(net.conv1.conv.weight.asnumpy(), entries["conv1.conv.weight"])


def test_unexpected_parameters(source_net, tmp_path):
    entries = _state(source_net)
    entries["extra_head.weight"] = np.ones((3, 3), np.float32)
    path = _save(entries, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match=r"1 checkpoint parameters the network does not have: extra_head"):
        googlenet(checkpoint_path=str(path))
    assert googlenet(checkpoint_path=str(path), strict=False).load_report.unexpected == ["extra_head.weight"]


def test_shape_mismatch_names_both_shapes_and_writes_nothing(source_net, tmp_path):
    entries = _state(source_net)
    entries["conv2.conv.weight"] = np.ones((64, 64, 3, 3), np.float32)
    path = _save(entries, tmp_path / "shape.ckpt")
    net = googlenet()
    before = net.conv3.conv.weight.asnumpy().copy()
    with pytest.raises(CheckpointError, match=r"conv2\.conv\.weight checkpoint \(64, 64, 3, 3\) vs network "
                                              r"\(64, 64, 1, 1\)"):
        load_into(net, path)
    assert np.array_equal(net.conv3.conv.weight.asnumpy(), before)  # strict failure writes nothing
    report = load_into(net, path, strict=False)
    assert [m[0] for m in report.mismatched] == ["conv2.conv.weight"]
    assert np.array_equal(net.conv3.conv.weight.asnumpy(), entries["conv3.conv.weight"])
    assert "shape mismatch (1)" in str(report)


def test_load_into_generic_cell_and_state_dict():
    src, dst = Tiny(), Tiny()
    report = load_into(dst, {n: p.asnumpy() for n, p in src.parameters_dict().items()})
    assert report.complete and len(report.loaded) == 4
    assert np.array_equal(dst.head.weight.asnumpy(), src.head.weight.asnumpy())
    other = Tiny(classes=7)
    with pytest.raises(CheckpointError, match="<state dict>"):
        load_into(other, _state(src))
    report = load_into(other, _state(src), drop=["head.*"], allow_missing=["head.*"])
    assert report.complete and sorted(report.kept_init) == ["head.bias", "head.weight"]


# --- reconfigured models ---------------------------------------------------------------------------------

def test_other_num_classes_drops_classifier_with_warning(source_net, ckpt):
    with pytest.warns(UserWarning, match="1000 classes, the model has 10: classifier"):
        net = googlenet(num_classes=10, checkpoint_path=str(ckpt))
    assert np.array_equal(net.inception5b.b3[1].conv.weight.asnumpy(),
                          source_net.inception5b.b3[1].conv.weight.asnumpy())
    assert sorted(net.load_report.kept_init) == ["classifier.bias", "classifier.weight"]


def test_aux_heads_absent_from_checkpoint_keep_init_with_warning(source_net, ckpt):
    with pytest.warns(UserWarning, match="has no aux1"):
        net = googlenet(aux_logits=True, checkpoint_path=str(ckpt))
    assert len(net.load_report.kept_init) == 10 and not net.load_report.missing
    assert np.array_equal(net.classifier.weight.asnumpy(), source_net.classifier.weight.asnumpy())


def test_aux_checkpoint_into_plain_model_and_other_classes(tmp_path):
    ms.set_seed(5)
    aux_net = googlenet(num_classes=1000, aux_logits=True)
    path = tmp_path / "aux.ckpt"
    ms.save_checkpoint(aux_net, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = googlenet(checkpoint_path=str(path))
    assert len(plain.load_report.dropped) == 10 and plain.load_report.complete
    x = _x()
    assert np.array_equal(_logits(plain, x), _logits(aux_net, x))
    with pytest.warns(UserWarning, match="classifier, aux1.fc2, aux2.fc2"):
        tuned = googlenet(num_classes=4, aux_logits=True, checkpoint_path=str(path))
    assert sorted(tuned.load_report.kept_init) == sorted(
        f"{p}.{k}" for p in ("classifier", "aux1.fc2", "aux2.fc2") for k in ("weight", "bias"))
    assert np.array_equal(tuned.aux1.fc1.weight.asnumpy(), aux_net.aux1.fc1.weight.asnumpy())


def test_in_channels_1_folds_rgb_weights(source_net, ckpt):
    gray = googlenet(in_channels=1, checkpoint_path=str(ckpt))
    folded = source_net.conv1.conv.weight.asnumpy().sum(axis=1, keepdims=True)
    assert np.array_equal(gray.conv1.conv.weight.asnumpy(), folded)
    x1 = _x(channels=1)
    x3 = ms.Tensor(np.repeat(x1.asnumpy(), 3, axis=1))
    assert np.allclose(_logits(gray, x1), _logits(source_net, x3), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="in_channels=2"):
        googlenet(in_channels=2, checkpoint_path=str(ckpt))
    with pytest.raises(CheckpointError, match="only 3 -> 1"):
        fold_input_channels({"w": np.ones((2, 3, 1, 1), np.float32)}, "w", 2)


def test_features_only_loads_a_classification_checkpoint(source_net, ckpt):
    feats = googlenet(features_only=True, out_indices=(1, 2), checkpoint_path=str(ckpt))
    report = feats.load_report
    assert report.complete and "classifier.weight" in report.dropped
    assert "inception5b.b1.conv.weight" in report.dropped
    assert np.array_equal(feats.inception3b.b1.conv.weight.asnumpy(),
                          source_net.inception3b.b1.conv.weight.asnumpy())


# --- pretrained=True and the local cache -----------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MINDPLUG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_cache_home_default(monkeypatch, tmp_path):
    monkeypatch.delenv("MINDPLUG_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert mindplug_home() == Path.home() / ".cache" / "mindplug"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mindplug_home() == tmp_path / "mindplug"


def test_pretrained_miss_says_which_file_where_and_where_published(home):
    with pytest.raises(CheckpointError) as err:
        googlenet(pretrained=True)
    message = str(err.value)
    expected = home / "weights" / "googlenet-de74c31d-910v2.ckpt"
    assert str(expected) in message and plugin.IMAGENET_WEIGHTS.source in message
    assert "never downloads" in message


def test_pretrained_prefix_mismatch(home):
    path = weights_path(plugin.IMAGENET_WEIGHTS)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a fake checkpoint")
    with pytest.raises(CheckpointError, match="sha256 prefix.*expected de74c31d"):
        googlenet(pretrained=True)


def test_pretrained_hit_with_prefix_and_full_hash(home, monkeypatch, source_net, ckpt):
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    named = dataclasses.replace(plugin.IMAGENET_WEIGHTS, file_name=f"googlenet-{digest[:8]}-test.ckpt")
    assert name_hash_prefix(named.file_name) == digest[:8]
    target = weights_path(named)
    target.parent.mkdir(parents=True)
    target.write_bytes(ckpt.read_bytes())
    assert cached_weights(named) == target
    monkeypatch.setattr(plugin, "IMAGENET_WEIGHTS", named)
    x = _x()
    assert np.array_equal(_logits(googlenet(pretrained=True), x), _logits(source_net, x))
    wrong = dataclasses.replace(named, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="fail the sha256 check"):
        cached_weights(wrong)
    with pytest.raises(ConfigError, match="not both"):
        googlenet(pretrained=True, checkpoint_path=str(ckpt))


def test_ema_weights_and_text_metadata(source_net, tmp_path):
    entries = {f"ema.{n}": v * 0.5 for n, v in _state(source_net).items()}
    entries.update(_state(source_net))
    path = tmp_path / "ema.ckpt"
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in entries.items()], str(path),
                       append_dict={"mindplug.train_state": '{"epoch": 3}'})
    assert "mindplug.train_state" not in read_checkpoint(path)
    raw, averaged = googlenet(), googlenet()
    assert load_into(raw, path).complete
    assert np.array_equal(raw.conv1.conv.weight.asnumpy(), entries["conv1.conv.weight"])
    assert load_into(averaged, path, ema=True).complete
    assert np.array_equal(averaged.conv1.conv.weight.asnumpy(), entries["ema.conv1.conv.weight"])
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_into(googlenet(), _state(source_net), ema=True)
