"""Top-k predictions for image files, with class names, as a table or JSON."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence

import numpy as np

from .._console import render_table


def read_image(path: str) -> np.ndarray:
    """An HWC uint8 array (C = 1 for grey files, else 3); a bad file is one DataError naming it."""
    from .._images import read_image as read

    return read(path)


def preprocess(transforms: Dict[str, Any], images: Sequence[np.ndarray]) -> np.ndarray:
    """The evaluation transforms of the recipe, applied one image at a time, stacked to NCHW float32."""
    from mindplug._transforms import build_transforms

    ops = build_transforms(transforms, is_training=False)
    out = []
    for image in images:
        for op in ops:
            image = op(image)
        out.append(np.asarray(image, dtype=np.float32))
    return np.stack(out)


def predict(net: Any, batch: np.ndarray, paths: Sequence[str], names: List[str], topk: int) -> List[Dict[str, Any]]:
    """[{image, top: [{rank, class, name, probability}]}] for each path."""
    import mindspore as ms
    from mindspore import ops

    logits = net(ms.Tensor(batch))
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    probs = ops.softmax(logits.astype(ms.float32), axis=-1).asnumpy()
    k = min(topk, probs.shape[1])
    results = []
    for path, row in zip(paths, probs):
        order = np.argsort(-row, kind="stable")[:k]
        results.append({"image": path, "top": [{"rank": r + 1, "class": int(c), "name": names[int(c)],
                                               "probability": float(row[c])} for r, c in enumerate(order)]})
    return results


def render(results: List[Dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps(results, indent=2)
    rows = [[res["image"], t["rank"], t["class"], t["name"], f"{100 * t['probability']:.2f}%"]
            for res in results for t in res["top"]]
    return render_table(rows, ["image", "rank", "class", "name", "probability"])


def predict_files(job: Any, paths: Sequence[str], *, topk: int, as_json: bool) -> str:
    """``mindplug predict``: the rendered top-k of each image file."""
    batch = preprocess(job.transforms, [read_image(p) for p in paths])
    return render(predict(job.net, batch, paths, job.class_names, topk), as_json)
