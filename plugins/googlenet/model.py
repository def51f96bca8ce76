"""GoogLeNet (Inception v1, Szegedy et al. 2014) in the seed's layout and checkpoint format.

Parameter names and shapes match MindCV's GoogLeNet checkpoints (conv1.conv.weight,
inception3a.b2.1.conv.weight, ..., aux1.fc1.weight, classifier.weight), so its weights load by
name. The blocks come from :mod:`mindplug.ops`; this file only says how they are wired.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeUniform, Zero

from mindplug._errors import ConfigError
from mindplug.ops import ConvReLU, Inception, MaxPoolSame

from . import CLASSIFIERS, OPTIONAL  # shared with the spec's metadata, which the engine's loader reads

__all__ = ["GoogLeNet", "GoogLeNetFeatures", "InceptionAux", "googlenet", "FEATURE_INFO", "AUX_INPUT_RANGE"]

#: Inception(in, c1, c3r, c3, c5r, c5, pool_proj) of each block, as in the paper's table 1.
INCEPTION_CFG: Dict[str, Tuple[int, int, int, int, int, int, int]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


#: The trunk in execution order; max pools carry (kernel, stride).
TRUNK: Tuple[str, ...] = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)
_POOLS: Dict[str, Tuple[int, int]] = {"maxpool1": (3, 2), "maxpool2": (3, 2), "maxpool3": (3, 2), "maxpool4": (2, 2)}

#: The feature levels ``features_only`` can return: the output of ``module``.
FEATURE_INFO: Tuple[Dict[str, Any], ...] = (
    {"index": 0, "module": "conv1", "num_chs": 64, "reduction": 2},
    {"index": 1, "module": "conv3", "num_chs": 192, "reduction": 4},
    {"index": 2, "module": "inception3b", "num_chs": 480, "reduction": 8},
    {"index": 3, "module": "inception4e", "num_chs": 832, "reduction": 16},
    {"index": 4, "module": "inception5b", "num_chs": 1024, "reduction": 32},
)

#: Inputs (px) at which the auxiliary heads are defined: their 5x5/3 average pool must turn the
#: inception4a map (ceil(size / 16) px) into the 4x4x128 = 2048 features that fc1 takes.
AUX_INPUT_RANGE: Tuple[int, int] = (16 * 13 + 1, 16 * 16)
_AUX_MAP_RANGE: Tuple[int, int] = (14, 16)


def _dense(in_features: int, out_features: int) -> nn.Dense:
    """Dense with PyTorch-style He-uniform weights and zero bias, as MindCV initialises them."""
    return nn.Dense(in_features, out_features, weight_init=HeUniform(negative_slope=math.sqrt(5)),
                    bias_init=Zero())


def _check_aux_input(side: int) -> None:
    """Refuse inputs whose 4a map the auxiliary heads cannot take, instead of a MatMul shape error."""
    if side < _AUX_MAP_RANGE[0] or side > _AUX_MAP_RANGE[1]:
        raise ValueError(
            "GoogLeNet aux_logits=True: the auxiliary heads need an inception4a feature map of 14 to 16 px "
            "(avgpool 5/3 -> 4x4x128 = 2048 features for fc1), got " + str(side) + " px; feed inputs of "
            "209 to 256 px (224 as in the paper), or create the model with aux_logits=False")


def _add_trunk(cell: nn.Cell, in_channels: int, names: Sequence[str]) -> None:
    """Attach the trunk layers ``names`` to ``cell`` under their checkpoint names."""
    stem = {"conv1": (in_channels, 64, 7, 2), "conv2": (64, 64, 1, 1), "conv3": (64, 192, 3, 1)}
    for name in names:
        if name in stem:
            c_in, c_out, kernel, stride = stem[name]
            setattr(cell, name, ConvReLU(c_in, c_out, kernel, stride))
        elif name in _POOLS:
            setattr(cell, name, MaxPoolSame(*_POOLS[name]))
        else:
            setattr(cell, name, Inception(*INCEPTION_CFG[name]))


class InceptionAux(nn.Cell):
    """Auxiliary classifier: avgpool 5/3 -> 1x1 conv 128 -> fc 2048->1024 -> ReLU -> dropout -> fc."""

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.7) -> None:
        super().__init__()
        self.avg_pool = nn.AvgPool2d(kernel_size=5, stride=3)
        self.conv = ConvReLU(in_channels, 128, 1)
        self.flatten = nn.Flatten()
        self.fc1 = _dense(2048, 1024)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=drop_rate)
        self.fc2 = _dense(1024, num_classes)

    def construct(self, x: Tensor) -> Tensor:
        _check_aux_input(x.shape[2])
        x = self.flatten(self.conv(self.avg_pool(x)))
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(nn.Cell):
    """GoogLeNet classifier; in training with ``aux_logits`` it returns ``(main, aux2, aux1)``."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False,
                 drop_rate: float = 0.2, drop_rate_aux: float = 0.7) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.aux_logits = aux_logits
        self.feature_info: List[Dict[str, Any]] = [dict(info) for info in FEATURE_INFO]
        _add_trunk(self, in_channels, TRUNK)
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, drop_rate_aux)
            self.aux2 = InceptionAux(528, num_classes, drop_rate_aux)
        self.dropout = nn.Dropout(p=drop_rate)
        self.classifier = _dense(1024, num_classes)

    def construct(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.aux_logits and self.training
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.classifier(self.dropout(ops.mean(x, (2, 3))))
        if with_aux:
            return x, aux2, aux1
        return x


class GoogLeNetFeatures(nn.Cell):
    """GoogLeNet trunk as a backbone: returns the feature maps of ``out_indices`` (see ``feature_info``).

    Only the layers up to the deepest requested level are built, under the classifier's names, so a
    classification checkpoint loads into it by name.
    """

    def __init__(self, in_channels: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.feature_info = [dict(FEATURE_INFO[i]) for i in self.out_indices]
        last = TRUNK.index(FEATURE_INFO[max(self.out_indices)]["module"])
        self._layers = TRUNK[: last + 1]
        taps = {FEATURE_INFO[i]["module"] for i in self.out_indices}
        self._taps = tuple(name in taps for name in self._layers)
        _add_trunk(self, in_channels, self._layers)

    def construct(self, x: Tensor) -> Tuple[Tensor, ...]:
        outs = ()
        for name, tap in zip(self._layers, self._taps):
            x = getattr(self, name)(x)
            if tap:
                outs = outs + (x,)
        return outs


def _check_out_indices(out_indices: Sequence[int]) -> Tuple[int, ...]:
    levels = [info["index"] for info in FEATURE_INFO]
    described = ", ".join(f"{i} = {info['module']}" for i, info in enumerate(FEATURE_INFO))
    chosen = tuple(out_indices)
    bad = [i for i in chosen if not isinstance(i, int) or isinstance(i, bool) or i not in levels]
    if not chosen or bad or len(set(chosen)) != len(chosen):
        raise ConfigError(f"googlenet out_indices={chosen!r}: give distinct feature levels from {levels} "
                          f"({described})")
    return tuple(sorted(chosen))


def googlenet(num_classes: int = 1000, *, in_channels: int = 3, aux_logits: bool = False,
              drop_rate: float = 0.2, drop_rate_aux: float = 0.7, features_only: bool = False,
              out_indices: Sequence[int] = (0, 1, 2, 3, 4), pretrained: bool = False,
              checkpoint_path: Optional[str] = None, strict: bool = True) -> nn.Cell:
    """Build GoogLeNet; ``pretrained`` takes the seed's ImageNet weights from the local cache,
    ``checkpoint_path`` loads any MindSpore checkpoint in the seed's format by parameter name.
    """
    if pretrained and checkpoint_path:
        raise ConfigError("googlenet: pass either pretrained=True (the cached ImageNet weights) or "
                          f"checkpoint_path={checkpoint_path!r}, not both")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"googlenet num_classes={num_classes!r}: must be a positive int")
    if in_channels not in (1, 3) and (pretrained or checkpoint_path):
        raise ConfigError(f"googlenet in_channels={in_channels}: checkpoints are RGB; they can be loaded "
                          "with in_channels=3 or folded to in_channels=1")
    net: nn.Cell
    if features_only:
        net = GoogLeNetFeatures(in_channels, _check_out_indices(out_indices))
    else:
        net = GoogLeNet(num_classes, in_channels, aux_logits, drop_rate, drop_rate_aux)
    source: Optional[str] = checkpoint_path
    if pretrained:
        from mindplug._hub import cached_weights
        from . import IMAGENET_WEIGHTS
        source = str(cached_weights(IMAGENET_WEIGHTS))
    if source:
        from mindplug._checkpoint import load_model_checkpoint
        # Aux heads may be absent on either side; a backbone also drops the head and unbuilt stages.
        optional = list(OPTIONAL)
        if features_only:
            optional += ["classifier.*"] + [f"{n}.*" for n in TRUNK if n not in net._layers]
        net.load_report = load_model_checkpoint(net, source, strict=strict, first_conv="conv1.conv.weight",
                                                classifiers=CLASSIFIERS, optional=optional)
    return net
