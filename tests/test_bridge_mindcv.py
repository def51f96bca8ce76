"""The MindCV bridge (bridges/mindcv), installed with pip into a throw-away target as a user would install it.

Every MindCV model must appear under the plugin name ``mindcv`` without MindSpore or MindCV being imported to
list it, build through mindplug with MindCV's own arguments, keep the built-in GoogLeNet the bare
``googlenet``, and leave mindplug exactly as before once removed.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "bridges" / "mindcv"
RECIPES = ROOT / "tests" / "data" / "mindcv_recipes"
CATALOGUE = BRIDGE / "mindplug_mindcv" / "data" / "mindcv-0.3.0.json"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mindcv") is None,
                                reason="MindCV is not installed (pip install --no-deps mindcv==0.3.0)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The bridge pip-installed into its own folder; a copy of the source keeps build files out of the tree."""
    base = tmp_path_factory.mktemp("bridge")
    source = base / "src"
    shutil.copytree(BRIDGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target


def _run(site: Path | None, *args: str, code: str | None = None, env: Dict[str, str] | None = None,
         timeout: int = 300) -> subprocess.CompletedProcess:
    path = os.environ.get("PYTHONPATH", "")
    environ = dict(os.environ, **(env or {}))
    environ["PYTHONPATH"] = (str(site) + os.pathsep + path) if site else path
    command = [sys.executable, "-c", textwrap.dedent(code)] if code else [sys.executable, "-m", "mindplug", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=timeout, cwd=ROOT)


def _shipped_names() -> List[str]:
    return [m["name"] for m in json.loads(CATALOGUE.read_text())["models"]]


def _recipe_rows() -> List[Dict[str, str]]:
    with open(RECIPES / "models.tsv", encoding="utf-8") as handle:
        return list(csv.DictReader((line for line in handle if not line.startswith("#")), delimiter="\t"))


# ------------------------------------------------------------------------------------------- listing

def test_zoo_is_listed_fast_without_importing_mindspore_or_mindcv(site):
    out = _run(site, code="""
        import json, sys, time
        start = time.perf_counter()
        import mindplug
        names = mindplug.list("mindcv:*")
        seconds = time.perf_counter() - start
        print(json.dumps({"names": names, "seconds": seconds, "mindspore": "mindspore" in sys.modules,
                          "mindcv": "mindcv" in sys.modules}))
    """)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["mindspore"] is False and data["mindcv"] is False
    assert len(data["names"]) == len(_shipped_names()) == 275
    assert "mindcv:googlenet" in data["names"] and "resnet18" in data["names"]
    assert data["seconds"] < 0.5, data["seconds"]  # import mindplug + discovery + 275 specs


def test_list_models_command_shows_the_zoo_well_under_a_second(site):
    _run(site, "list", "models")  # warm the file cache, as a second invocation would be
    start = time.perf_counter()
    out = _run(site, "list", "models")
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert sum(1 for r in rows if r[2] == "mindcv") == 275
    assert ["model", "googlenet", "googlenet"] == rows[0][:3]  # the built-in keeps its row and bare name
    assert seconds < 1.5, f"`mindplug list models` took {seconds:.2f} s (interpreter start included)"


def test_names_are_those_of_the_installed_mindcv(site):
    out = _run(site, code="""
        import json, mindcv
        from mindplug_mindcv import catalog
        print(json.dumps({"mindcv": mindcv.list_models(), "shipped": catalog.names(),
                          "version": mindcv.__version__, "catalogue": catalog.load()["mindcv_version"]}))
    """)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["version"] == data["catalogue"] == "0.3.0"
    assert data["shipped"] == data["mindcv"]


def test_shipped_catalogue_is_what_the_generator_writes_from_the_installed_mindcv():
    """Names, default_cfgs (weights URL, classes, input size, mean/std, crop, interpolation, first conv,
    classifier) and factory arguments, regenerated from MindCV and compared byte for byte."""
    out = subprocess.run([sys.executable, str(BRIDGE / "tools" / "generate.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "is up to date (275 models)" in out.stdout


def test_weights_records_are_mindcvs_default_cfgs(site):
    out = _run(site, code="""
        import json, mindplug
        from mindcv.models import registry
        problems, with_weights = [], 0
        for name in registry.list_models():
            cfg = registry.get_pretrained_cfg(name)
            info = mindplug.info("mindcv:" + name)
            url = cfg.get("url") or ""
            if not url:
                problems += [name] if info.weights else []
                continue
            with_weights += 1
            (w,) = info.weights
            mean = [v * 255 if max(cfg["mean"]) <= 1 else v for v in cfg["mean"]] if "mean" in cfg else None
            expected = {"file_name": url.rsplit("/", 1)[1], "source": url, "sha256": None,
                        "num_classes": cfg["num_classes"], "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
                        "crop_pct": cfg.get("crop_pct", 0.875), "interpolation": cfg.get("interpolation", "bilinear")}
            got = {k: getattr(w, k) for k in expected}
            if got != expected or (mean is not None and [round(v, 6) for v in w.mean] != [round(v, 6) for v in mean]):
                problems.append((name, got, expected))
            for key in ("first_conv", "classifier"):
                if cfg.get(key) != info.metadata.get(key):
                    problems.append((name, key))
        print(json.dumps({"problems": problems, "with_weights": with_weights}, default=str))
    """)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["problems"] == []
    assert data["with_weights"] == 156


# --------------------------------------------------------------------------------------- name clashes

def test_bare_googlenet_stays_the_builtin_and_the_canonical_id_builds_mindcvs(site):
    out = _run(site, code="""
        import warnings; warnings.simplefilter("ignore")
        import mindplug
        print("BARE", mindplug.info("googlenet").canonical_id)
        print("ZOO", mindplug.info("resnet18").canonical_id)
        print("LISTED", "googlenet" in mindplug.list(), "mindcv:googlenet" in mindplug.list())
        print("BUILTIN", type(mindplug.create("googlenet", num_classes=10)).__module__)
        print("MINDCV", type(mindplug.create("mindcv:googlenet", num_classes=10)).__module__)
    """)
    assert out.returncode == 0, out.stderr
    assert "BARE googlenet:googlenet" in out.stdout
    assert "ZOO mindcv:resnet18" in out.stdout  # a name only the zoo has needs no prefix
    assert "LISTED True True" in out.stdout
    assert "BUILTIN mindplug.plugins.googlenet.model" in out.stdout
    assert "MINDCV mindcv.models.googlenet" in out.stdout


# ------------------------------------------------------------------------------------- building models

#: (model, in_channels, input size): one or two of each family, small variants, small inputs where allowed
ZOO_SAMPLE = [
    ("resnet18", 1, 32), ("skresnet18", 1, 32), ("densenet121", 1, 32), ("regnet_x_200mf", 1, 32),
    ("repvgg_a0", 1, 32), ("convnextv2_atto", 1, 32), ("mobilenet_v2_035_128", 1, 64),
    ("mobilenet_v3_small_075", 1, 64), ("efficientnet_b0", 1, 64), ("mnasnet_050", 1, 64),
    ("shufflenet_v2_x0_5", 1, 64), ("ghostnet_050", 1, 64), ("squeezenet1_1", 1, 64), ("mixnet_s", 1, 64),
    ("poolformer_s12", 1, 64), ("pvt_v2_b0", 1, 64), ("mobilevit_xx_small", 3, 64),
    ("edgenext_xx_small", 3, 64), ("pit_ti", 3, 224), ("swin_tiny", 3, 224),
]


def test_a_sample_of_zoo_families_builds_and_gives_finite_logits(site):
    out = _run(site, code=f"""
        import json, warnings; warnings.simplefilter("ignore")
        import numpy as np, mindspore as ms, mindplug
        ms.set_context(mode=ms.PYNATIVE_MODE)
        rows = []
        for name, channels, size in {ZOO_SAMPLE!r}:
            net = mindplug.create("mindcv:" + name, num_classes=10, in_channels=channels)
            net.set_train(False)
            x = ms.Tensor(np.random.default_rng(0).standard_normal((2, channels, size, size)).astype(np.float32))
            y = net(x).asnumpy()
            rows.append([name, list(y.shape), bool(np.isfinite(y).all()), float(y.std())])
        print(json.dumps(rows))
    """, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r[0] for r in rows] == [m[0] for m in ZOO_SAMPLE]
    for name, shape, finite, spread in rows:
        assert shape == [2, 10] and finite, (name, shape, finite)
        assert spread > 0, f"{name}: every logit is the same"


def test_the_bridge_builds_exactly_what_mindcv_builds(site):
    out = _run(site, code="""
        import warnings; warnings.simplefilter("ignore")
        import numpy as np, mindspore as ms, mindcv, mindplug
        ms.set_context(mode=ms.PYNATIVE_MODE)
        x = ms.Tensor(np.random.default_rng(1).standard_normal((2, 1, 32, 32)).astype(np.float32))
        for name in ("resnet18", "convnextv2_atto"):
            outs, names = [], []
            for build in (lambda: mindplug.create("mindcv:" + name, num_classes=10, in_channels=1),
                          lambda: mindcv.create_model(name, num_classes=10, in_channels=1)):
                ms.set_seed(7); np.random.seed(7)
                net = build(); net.set_train(False)
                outs.append(net(x).asnumpy()); names.append([p.name for p in net.get_parameters()])
            print(name, names[0] == names[1], float(np.abs(outs[0] - outs[1]).max()))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    for line in out.stdout.strip().splitlines()[-2:]:
        name, same_names, diff = line.split()
        assert same_names == "True" and float(diff) == 0.0, line


def test_arguments_are_checked_against_what_mindcv_accepts(site):
    out = _run(site, code="""
        import warnings; warnings.simplefilter("ignore")
        import sys, mindplug
        info = mindplug.info("mindcv:densenet121")
        print("SIG", info.signature)
        print("LIGHT", "mindspore" not in sys.modules)
        cases = [("mindcv:resnet18", {"drop_rate": 0.1}), ("mindcv:resnet18", {"pretrained": True}),
                 ("mindcv:seresnet18", {"in_channels": 1}), ("mindcv:volo_d5", {"num_classes": 10}),
                 ("mindcv:mae_b_16_224_pretrain", {})]
        for name, kwargs in cases:
            try:
                mindplug.create(name, **kwargs)
                print("BUILT", name)
            except mindplug.MindplugError as exc:
                print(type(exc).__name__, "|", exc)
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    sig = next(l for l in lines if l.startswith("SIG"))
    assert "num_classes: int = 1000" in sig and "drop_rate: float = 0.0" in sig and "pretrained" not in sig
    assert "LIGHT True" in lines
    errors = [l for l in lines if "|" in l]
    assert len(errors) == 5, out.stdout
    assert errors[0].startswith("ComponentArgumentError") and "'mindcv:resnet18'" in errors[0] \
        and "'drop_rate'" in errors[0] and "Accepted arguments" in errors[0]
    assert errors[1].startswith("ComponentArgumentError") and "'pretrained'" in errors[1]
    assert errors[2].startswith("ComponentArgumentError") and "ignores it" in errors[2]
    assert "in_channels: 3" in errors[2]
    assert errors[3].startswith("ComponentArgumentError") and "num_classes=10" in errors[3]
    assert errors[4].startswith("ComponentImportError") and "cannot build it" in errors[4]


# ------------------------------------------------------------------------------------------- weights

def test_weights_come_only_from_the_cache_and_are_checked(site, tmp_path):
    out = _run(site, env={"MINDPLUG_HOME": str(tmp_path)}, code="""
        import warnings; warnings.simplefilter("ignore")
        import os, mindplug
        from mindplug._checkpoint import load_weights
        (w,) = mindplug.info("mindcv:resnet18").weights
        net = mindplug.create("mindcv:resnet18", num_classes=10)
        try:
            load_weights(net, w, model="mindcv:resnet18", fine_tune=True)
        except mindplug.CheckpointError as exc:
            print("MISSING |", exc)
        path = os.path.join(os.environ["MINDPLUG_HOME"], "weights", w.file_name)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as handle:
            handle.write(b"not a checkpoint")
        try:
            load_weights(net, w, model="mindcv:resnet18", fine_tune=True)
        except mindplug.CheckpointError as exc:
            print("CORRUPT |", exc)
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    missing = next(l for l in out.stdout.splitlines() if l.startswith("MISSING"))
    corrupt = next(l for l in out.stdout.splitlines() if l.startswith("CORRUPT"))
    assert "put the file 'resnet18-1e65cd21.ckpt'" in missing and str(tmp_path) in missing
    assert "https://download.mindspore.cn/toolkits/mindcv/resnet/resnet18-1e65cd21.ckpt" in missing
    assert "sha256 prefix" in corrupt and "expected 1e65cd21" in corrupt


def test_a_mindcv_checkpoint_fine_tunes_into_a_one_channel_ten_class_network(site, tmp_path):
    """What the engine does with a cached MindCV checkpoint: by name, classifier left at init, stem folded."""
    out = _run(site, code=f"""
        import warnings; warnings.simplefilter("ignore")
        import mindspore as ms, mindplug
        from mindplug._checkpoint import load_weights
        imagenet = mindplug.create("mindcv:resnet18")  # 1000 classes, RGB: what MindCV publishes
        ms.save_checkpoint(imagenet, {str(tmp_path / 'resnet18.ckpt')!r})
        net = mindplug.create("mindcv:resnet18", num_classes=10, in_channels=1)
        report = load_weights(net, {str(tmp_path / 'resnet18.ckpt')!r}, model="mindcv:resnet18", fine_tune=True)
        print("LOADED", len(report.loaded), len(list(net.get_parameters())))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded, total = map(int, out.stdout.split("LOADED")[1].split())
    assert loaded >= total - 2  # everything but classifier.weight/bias


# ------------------------------------------------------------------------------------ MindCV's recipes

def test_every_model_mindcvs_recipes_name_resolves_through_the_registry(site):
    rows = _recipe_rows()
    assert len(rows) == 179 and len({r["path"] for r in rows}) == 179
    names = sorted({r["model"] for r in rows} | {r["note"].partition(":")[2] for r in rows if r["note"]})
    out = _run(site, code=f"""
        import json, warnings; warnings.simplefilter("ignore")
        import mindplug
        found = {{}}
        for name in {names!r}:
            try:
                found[name] = mindplug.info(name).canonical_id
            except mindplug.MindplugError as exc:
                found[name] = type(exc).__name__
        print(json.dumps(found))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout)
    for row in rows:
        if row["note"].startswith("stale:"):
            # the index holds a version older than MindCV's renames; the recipe's sibling names the model
            assert found[row["model"]] == "UnknownComponentError", row
            assert found[row["note"][len("stale:"):]] == "mindcv:" + row["note"][len("stale:"):], row
        elif row["model"] == "googlenet":
            assert found["googlenet"] == "googlenet:googlenet"  # the built-in, by the fallback rule
        else:
            assert found[row["model"]] == "mindcv:" + row["model"], row


def _load_recipe(path: Path):
    from mindplug.engine.recipe import load_recipe

    return load_recipe(str(path))


VENDORED = sorted(RECIPES.glob("configs/*/*.yaml"))


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in VENDORED])
def test_mindcvs_recipes_load_unchanged(path):  # visformer's write 'interpolation: BICUBIC' in capitals
    recipe = _load_recipe(path)
    assert recipe["model"] == next(r["model"] for r in _recipe_rows() if r["path"] == str(path.relative_to(RECIPES)))


def test_the_bridges_sample_recipe_loads_and_names_the_zoo_model():
    recipe = _load_recipe(BRIDGE / "configs" / "resnet18_fashion_mnist_sample.yaml")
    assert recipe["model"] == "mindcv:resnet18" and recipe["in_channels"] == 1 and recipe["num_classes"] == 10


# ------------------------------------------------------------------------------------------ uninstall

def _list_json(site: Path | None) -> list:
    out = _run(site, "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_installing_adds_only_the_zoo_and_uninstalling_leaves_mindplug_as_before(site, tmp_path):
    before_text = _run(None, "list").stdout
    before = _list_json(None)
    with_bridge = _list_json(site)
    assert [r for r in with_bridge if r["plugin"] != "mindcv"] == before
    assert sum(1 for r in with_bridge if r["plugin"] == "mindcv") == 275
    # uninstall as pip does: remove every file the distribution's RECORD lists
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    (record,) = copy.glob("mindplug_mindcv-*.dist-info/RECORD")
    for line in record.read_text().splitlines():
        (copy / line.split(",")[0]).unlink(missing_ok=True)
    for folder in sorted((p for p in copy.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    assert not any(copy.iterdir()), list(copy.rglob("*"))
    assert _list_json(copy) == before
    assert _run(copy, "list").stdout == before_text


def test_doctor_finds_nothing_wrong_with_the_bridge(site):
    out = _run(site, "doctor")
    line = next(l for l in out.stdout.splitlines() if " mindcv (" in l)
    assert line.startswith("ok") and "275 components" in line and "slow" not in line, line
    assert not [l for l in out.stdout.splitlines() if l.startswith("FAIL") and "mindcv" in l], out.stdout


def test_a_mindcv_without_a_shipped_catalogue_is_a_clear_plugin_failure(site):
    out = _run(site, code="""
        from mindplug_mindcv import catalog
        try:
            catalog.load("9.9.9")
        except catalog.CatalogueError as exc:
            print("ERROR", exc)
    """)
    assert "ships model catalogues for MindCV 0.3.0, but MindCV 9.9.9 is installed" in out.stdout, out.stderr
    assert "tools/generate.py" in out.stdout


@pytest.mark.slow
def test_the_zoos_resnet18_trains_on_the_sample_and_validates_exactly(site, tmp_path):
    """The bridge's own recipe, shortened: MindCV's ResNet-18 on mindplug's kernels learns the embedded
    Fashion-MNIST sample far above chance, and `mindplug validate` gives the best epoch's figures again."""
    recipe = BRIDGE / "configs" / "resnet18_fashion_mnist_sample.yaml"
    out = tmp_path / "run"
    common = ["-c", str(recipe), "--num_samples", "1000", "--ckpt_save_dir", str(out)]
    train = _run(site, "train", *common, "--epoch_size", "4", "--decay_epochs", "3", "--progress", "none",
                 timeout=1200)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    first = next(line for line in train.stdout.splitlines() if line.startswith("training "))
    on_kernels = first.rpartition(", ")[2]  # "42/52 layers on the C++ kernels"
    assert on_kernels.endswith("layers on the C++ kernels") and not on_kernels.startswith("0/"), first
    history = json.loads((out / "log.json").read_text())
    best = max(row["val_top1"] for row in history)
    assert best > 50.0, history  # chance is 10%
    check = _run(site, "validate", *common, "--ckpt_path", str(out / "mindcv_resnet18-best.ckpt"), "--json")
    assert check.returncode == 0, check.stderr[-2000:]
    result = json.loads(check.stdout[check.stdout.index("{"):])
    assert result["top1"] == pytest.approx(best, abs=1e-9)
