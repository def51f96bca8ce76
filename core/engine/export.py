"""Export a trained network to a deployable file: MindIR (MindSpore Lite / serving) or ONNX."""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from .._errors import ConfigError

#: --format value -> (MindSpore file_format, file extension)
FORMATS = {"MINDIR": ("MINDIR", ".mindir"), "ONNX": ("ONNX", ".onnx")}


def _write(net: Any, dummy: Any, stem: str, file_format: str) -> None:
    import mindspore as ms

    if file_format == "ONNX" and hasattr(ms, "onnx"):  # MindSpore 2.10 moved ONNX export here
        import mindspore.onnx

        mindspore.onnx.export(net, dummy, file_name=stem + ".onnx", input_names=["image"],
                              output_names=["logits"])
        return
    ms.export(net, dummy, file_name=stem, file_format=file_format)


def export_network(net: Any, *, fmt: str, output: str, batch_size: int, in_channels: int, size: int) -> str:
    """Write ``net`` (eval mode) for an input of ``batch_size x in_channels x size x size``; returns the path."""
    import mindspore as ms

    key = fmt.upper()
    if key not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
    file_format, ext = FORMATS[key]
    stem = output[: -len(ext)] if output.lower().endswith(ext) else output
    os.makedirs(os.path.dirname(os.path.abspath(stem)) or ".", exist_ok=True)
    net.set_train(False)
    dummy = ms.Tensor(np.zeros((batch_size, in_channels, size, size), dtype=np.float32))
    _write(net, dummy, stem, file_format)
    path = stem + ext
    if not os.path.isfile(path):
        raise RuntimeError(f"MindSpore reported no error but wrote no {path!r}")
    return path


def default_output(ckpt_path: str, fmt: str, output: Optional[str]) -> str:
    """``--output`` or the checkpoint's path with the format's extension."""
    if output:
        return output
    ext = FORMATS.get(fmt.upper(), ("", "." + fmt.lower()))[1]
    return os.path.splitext(os.path.abspath(ckpt_path))[0] + ext


def export_job(job: Any, *, fmt: str, output: Optional[str], batch_size: int) -> str:
    """``mindplug export``: the job's (portable) network written; the message to print."""
    size, channels = job.input_size, job.in_channels
    path = export_network(job.net, fmt=fmt, output=default_output(job.checkpoint, fmt, output),
                          batch_size=batch_size, in_channels=channels, size=size)
    return f"exported {fmt.upper()} for input {batch_size}x{channels}x{size}x{size}: {path}"
