"""GoogLeNet as the seed defines it: parameter table, forward shapes in both modes, aux heads, backbone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import nn  # noqa: E402

import mindplug  # noqa: E402
from mindplug._errors import ConfigError  # noqa: E402
from mindplug._hub import name_hash_prefix  # noqa: E402
from mindplug.plugins.googlenet import IMAGENET_WEIGHTS, mindplug_models  # noqa: E402
from mindplug.plugins.googlenet.model import (AUX_INPUT_RANGE, FEATURE_INFO, GoogLeNet,  # noqa: E402
                                              GoogLeNetFeatures, googlenet)

TSV = Path(__file__).parent / "data" / "googlenet-checkpoint-params.tsv"


def _reference_tables() -> Dict[bool, List[Tuple[str, Tuple[int, ...]]]]:
    """The two tables of the reference tsv, keyed by aux_logits."""
    tables: Dict[bool, List[Tuple[str, Tuple[int, ...]]]] = {}
    current = None
    for line in TSV.read_text().splitlines():
        if line.startswith("# googlenet("):
            current = tables.setdefault("aux_logits=True" in line, [])
        elif line and not line.startswith("#"):
            name, shape = line.split("\t")[:2]
            current.append((name, tuple(ast.literal_eval(shape))))
    return tables


def _x(batch: int, size: int, channels: int = 3, seed: int = 0) -> "ms.Tensor":
    return ms.Tensor(np.random.default_rng(seed).standard_normal((batch, channels, size, size), np.float32))


def test_plugin_and_ops_import_without_mindspore():
    code = ("import sys, mindplug.plugins.googlenet, mindplug.ops; "
            "assert 'mindspore' not in sys.modules, 'mindspore imported'; "
            "assert mindplug.ops.__all__ == ['AvgPool2d', 'Conv2d', 'ConvReLU', 'Inception', 'MaxPool2d', 'MaxPoolSame', 'Summary', 'accelerate', 'summary']")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_spec_and_weights_record():
    (spec,) = mindplug_models()
    assert (spec.name, spec.kind, spec.target) == ("googlenet", "model", "mindplug.plugins.googlenet.model:googlenet")
    w = spec.weights[0]
    assert w is IMAGENET_WEIGHTS
    assert w.file_name == "googlenet-de74c31d-910v2.ckpt" and w.source.endswith("/" + w.file_name)
    assert name_hash_prefix(w.file_name) == "de74c31d"
    assert (w.num_classes, w.input_size, w.eval_transform, w.crop_pct, w.interpolation) == \
        (1000, (3, 224, 224), "resize_center_crop", 0.875, "bilinear")
    assert np.allclose(w.mean, (123.675, 116.28, 103.53)) and np.allclose(w.std, (58.395, 57.12, 57.375))
    assert dict(w.metrics) == {"top1": 72.89, "top5": 90.89}


@pytest.mark.parametrize("aux", [False, True])
def test_parameter_names_shapes_and_count(aux):
    reference = _reference_tables()[aux]
    net = googlenet(aux_logits=aux)
    ours = [(name, tuple(p.shape)) for name, p in net.parameters_dict().items()]
    assert ours == reference
    assert sum(int(np.prod(s)) for _, s in ours) == (13_370_744 if aux else 6_991_272)
    assert all(p.requires_grad for p in net.get_parameters())


def test_create_through_registry_matches_factory():
    net = mindplug.create("googlenet", num_classes=7, in_channels=1)
    assert isinstance(net, GoogLeNet)
    shapes = {n: tuple(p.shape) for n, p in net.parameters_dict().items()}
    assert shapes["conv1.conv.weight"] == (64, 1, 7, 7) and shapes["classifier.weight"] == (7, 1024)


def test_no_conv_bias_and_he_normal_init():
    ms.set_seed(1)
    net = googlenet()
    params = net.parameters_dict()
    assert not any(n.endswith("conv.bias") for n in params)
    w = params["inception4e.b2.1.conv.weight"].asnumpy()  # fan_in 160*9
    assert abs(w.std() - np.sqrt(2.0 / (160 * 9))) < 0.05 * np.sqrt(2.0 / (160 * 9))
    assert abs(w.mean()) < 1e-3
    assert np.all(params["classifier.bias"].asnumpy() == 0)


@pytest.mark.parametrize("size,batch", [(32, 2), (64, 1), (96, 2)])
def test_forward_small_inputs(mode, size, batch):
    net = googlenet(num_classes=10)
    net.set_train(False)
    out = net(_x(batch, size))
    assert out.shape == (batch, 10)
    assert np.isfinite(out.asnumpy()).all()


def test_forward_224_and_aux_outputs_in_training(mode):
    net = googlenet(num_classes=5, aux_logits=True)
    net.set_train(True)
    main, aux2, aux1 = net(_x(1, 224))
    assert main.shape == aux2.shape == aux1.shape == (1, 5)
    net.set_train(False)
    out = net(_x(1, 224))
    assert isinstance(out, ms.Tensor) and out.shape == (1, 5)


def test_aux_heads_refuse_inputs_they_cannot_take(mode):
    net = googlenet(num_classes=5, aux_logits=True)
    net.set_train(True)
    with pytest.raises(ValueError, match="209 to 256 px"):
        net(_x(1, 64))
    net.set_train(False)  # evaluation does not use the aux heads
    assert net(_x(1, 64)).shape == (1, 5)
    assert AUX_INPUT_RANGE == (209, 256)


def test_eval_is_deterministic_and_dropout_acts_in_training():
    net = googlenet(num_classes=10, drop_rate=0.5)
    x = _x(2, 32)
    net.set_train(False)
    assert np.array_equal(net(x).asnumpy(), net(x).asnumpy())
    net.set_train(True)
    assert not np.array_equal(net(x).asnumpy(), net(x).asnumpy())


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (1, 3), (2,)])
def test_features_only_shapes_and_info(mode, out_indices):
    size = 64
    net = googlenet(features_only=True, out_indices=out_indices)
    assert isinstance(net, GoogLeNetFeatures)
    feats = net(_x(1, size))
    assert len(feats) == len(out_indices) == len(net.feature_info)
    for feat, info, idx in zip(feats, net.feature_info, out_indices):
        assert info == FEATURE_INFO[idx]
        assert feat.shape == (1, info["num_chs"], size // info["reduction"], size // info["reduction"])
    names = set(net.parameters_dict())
    assert not any(n.startswith(("classifier", "aux")) for n in names)
    assert ("inception5b.b1.conv.weight" in names) == (4 in out_indices)


def test_classifier_reports_feature_info():
    assert [i["module"] for i in googlenet().feature_info] == ["conv1", "conv3", "inception3b", "inception4e",
                                                               "inception5b"]


@pytest.mark.parametrize("bad", [(), (5,), (1, 1), ("conv3",), (True,)])
def test_bad_out_indices(bad):
    with pytest.raises(ConfigError, match="out_indices"):
        googlenet(features_only=True, out_indices=bad)


def test_inception_block_names_and_channels():
    from mindplug.ops import Inception

    block = Inception(192, 64, 96, 128, 16, 32, 32)
    assert block.out_channels == 256
    assert sorted(block.parameters_dict()) == sorted(
        ["b1.conv.weight", "b2.0.conv.weight", "b2.1.conv.weight", "b3.0.conv.weight", "b3.1.conv.weight",
         "b4.1.conv.weight"])
    assert block(_x(1, 7, channels=192)).shape == (1, 256, 7, 7)


def test_one_training_step_updates_every_parameter(mode):
    """Forward + backward through every block (the reference system's CI ran none)."""
    ms.set_seed(2)
    net = googlenet(num_classes=4, drop_rate=0.0)
    loss = nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
    step = nn.TrainOneStepCell(loss, nn.SGD(net.trainable_params(), learning_rate=0.5))
    step.set_train(True)
    before = {n: p.asnumpy().copy() for n, p in net.parameters_dict().items()}
    value = step(_x(2, 32), ms.Tensor(np.array([1, 3], np.int32)))
    assert np.isfinite(value.asnumpy()).all()
    unchanged = [n for n, p in net.parameters_dict().items() if np.array_equal(p.asnumpy(), before[n])]
    assert unchanged == []
