"""The recipe schema: MindCV's keys and defaults, strict typed overrides, the seed's file unchanged."""
from __future__ import annotations

import os

import pytest
import yaml

from mindplug import ConfigError
from mindplug.engine.cli import _recipe_parser, parse
from mindplug.engine.keys import all_keys
from mindplug.engine.recipe import Recipe
from mindplug.engine.recipe import load_recipe as load_config
from mindplug.engine.recipe import save_recipe as save_config

SCHEMA = all_keys()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_RECIPE = os.path.join(ROOT, "configs", "googlenet", "googlenet_ascend.yaml")
SAMPLE_RECIPE = os.path.join(ROOT, "configs", "googlenet", "googlenet_fashion_mnist_sample.yaml")

#: every key of the seed's recipe with its value (reference-system.md)
SEED_VALUES = {
    "mode": 0, "distribute": True, "num_parallel_workers": 8, "val_while_train": True, "dataset": "imagenet",
    "data_dir": "/path/to/imagenet", "shuffle": True, "dataset_download": False, "batch_size": 32,
    "drop_remainder": True, "image_resize": 224, "scale": (0.08, 1.0), "ratio": (0.75, 1.333), "hflip": 0.5,
    "interpolation": "bilinear", "crop_pct": 0.875, "model": "googlenet", "num_classes": 1000,
    "pretrained": False, "ckpt_path": "", "keep_checkpoint_max": 10, "ckpt_save_dir": "./ckpt",
    "epoch_size": 150, "dataset_sink_mode": True, "amp_level": "O0", "loss": "CE", "label_smoothing": 0.1,
    "scheduler": "cosine_decay", "lr": 0.045, "min_lr": 0.0, "decay_epochs": 145, "warmup_epochs": 5,
    "opt": "momentum", "momentum": 0.9, "weight_decay": 0.00004, "loss_scale": 1024.0, "use_nesterov": False,
}

#: option names MindCV users know (reference-system.md), each with MindCV's default
MINDCV_DEFAULTS = {
    "val_interval": 1, "log_interval": 100, "seed": 42, "train_split": "train", "val_split": "val",
    "num_samples": None, "vflip": 0.0, "color_jitter": 0.4, "auto_augment": None, "re_prob": 0.0,
    "re_scale": (0.02, 0.33), "re_ratio": (0.3, 3.3), "re_value": 0, "mixup": 0.0, "cutmix": 0.0,
    "cutmix_prob": 1.0, "aug_repeats": 0, "in_channels": 3, "drop_rate": None, "drop_path_rate": None,
    "resume_opt": False, "ckpt_save_interval": 1, "ckpt_save_policy": "latest_k", "ema": False,
    "ema_decay": 0.9999, "clip_grad": False, "clip_value": 15.0, "gradient_accumulation_steps": 1,
    "weight_decay_filter": "disable", "eps": 1e-10, "warmup_factor": 0.0, "decay_rate": 0.9,
    "multi_step_decay_milestones": [30, 60, 90], "lr_epoch_stair": False, "num_cycles": 1, "cycle_decay": 1.0,
    "aux_factor": 0.0, "reduction": "mean", "val_amp_level": "O0", "loss_scale_type": "fixed",
    "drop_overflow_update": False,
}


def test_seed_recipe_is_read_unchanged_with_every_value_typed():
    with open(SEED_RECIPE, encoding="utf-8") as handle:
        assert set(yaml.safe_load(handle)) == set(SEED_VALUES)
    cfg = load_config(SEED_RECIPE)
    for key, value in SEED_VALUES.items():
        assert cfg[key] == value, key
        assert type(cfg[key]) is type(value), key


def test_mindcv_option_names_have_mindcv_defaults():
    cfg = load_config(None)
    for key, value in MINDCV_DEFAULTS.items():
        assert key in SCHEMA, key
        assert cfg[key] == value, key


@pytest.mark.parametrize("text, expected", [("False", False), ("false", False), ("0", False), ("no", False),
                                            ("True", True), ("yes", True), ("1", True)])
def test_boolean_flags_parse_their_word(text, expected):
    assert load_config(None, [("distribute", text)])["distribute"] is expected


def test_a_bare_boolean_flag_is_true_and_a_bad_word_is_an_error():
    args, pairs = parse(_recipe_parser("train", ""), ["--ema", "--distribute", "False", "--lr=0.1", "-c", "x.yaml"])
    path = args.config
    assert path == "x.yaml"
    assert pairs == [("ema", True), ("distribute", "False"), ("lr", "0.1")]
    with pytest.raises(ConfigError, match=r"'distribute' = 'maybe'.*boolean"):
        load_config(None, [("distribute", "maybe")])


def test_pairs_and_lists_are_numbers_not_characters():
    cfg = load_config(None, [("scale", "0.08,1.0"), ("ratio", "[0.5, 2]"), ("mean", "1,2,3"),
                             ("multi_step_decay_milestones", "10,20")])
    assert cfg["scale"] == (0.08, 1.0) and cfg["ratio"] == (0.5, 2.0)
    assert cfg["mean"] == [1.0, 2.0, 3.0] and cfg["multi_step_decay_milestones"] == [10, 20]
    with pytest.raises(ConfigError, match="pair"):
        load_config(None, [("scale", "0.5")])


def test_unknown_keys_are_errors_with_close_matches():
    with pytest.raises(ConfigError, match=r"unknown config key 'warmup_epoch'.*did you mean 'warmup_epochs'"):
        load_config(None, [("warmup_epoch", "1")])
    with pytest.raises(ConfigError, match=r"'epochs_size'.*did you mean 'epoch_size'"):
        load_config(None, data={"epochs_size": 3})


def test_types_choices_and_ranges_are_checked():
    with pytest.raises(ConfigError, match="integer"):
        load_config(None, [("batch_size", "3.5")])
    with pytest.raises(ConfigError, match=r"'weight_decay_filter' = 'norm_and_bais'.*did you mean 'norm_and_bias'"):
        load_config(None, [("weight_decay_filter", "norm_and_bais")])
    with pytest.raises(ConfigError, match="probability"):
        load_config(None, [("hflip", "1.5")])
    assert load_config(None, [("mode", "pynative")])["mode"] == 1
    assert load_config(None, [("num_samples", "none")])["num_samples"] is None


def test_components_by_name_with_arguments_and_dotted_overrides():
    cfg = load_config(None, [("model", "{type: googlenet, aux_logits: true}"), ("model.drop_rate", "0.3"),
                             ("opt.betas", "[0.9, 0.99]")])
    assert cfg.component("model") == ("googlenet", {"aux_logits": True, "drop_rate": 0.3})
    assert cfg.component("opt") == ("adam", {"betas": [0.9, 0.99]})
    with pytest.raises(ConfigError, match="'type'"):
        load_config(None, data={"model": {"aux_logits": True}})
    with pytest.raises(ConfigError, match="only component keys"):
        load_config(None, [("lr.x", "1")])


def test_plugins_section_is_checked():
    cfg = load_config(None, data={"plugins": {"allow": ["googlenet"], "prefer": {"googlenet": "googlenet"}}})
    assert cfg["plugins"]["allow"] == ["googlenet"]
    with pytest.raises(ConfigError, match="did you mean 'prefer'"):
        load_config(None, data={"plugins": {"prefr": {}}})


def test_legacy_mindcv_keys_map_to_current_ones():
    cfg = load_config(None, data={"smooth_factor": 0.2, "filter_bias_and_bn": True, "dynamic_loss_scale": True})
    assert (cfg["label_smoothing"], cfg["weight_decay_filter"], cfg["loss_scale_type"]) == (0.2, "norm_and_bias", "dynamic")


def test_missing_or_bad_recipe_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(SAMPLE_RECIPE, [("lr", "0.01")])
    path = str(tmp_path / "run" / "config.yaml")
    save_config(cfg, path)
    again = load_config(path)
    assert isinstance(again, Recipe)
    assert {k: v for k, v in again.items() if k != "config"} == {k: v for k, v in cfg.items() if k != "config"}


@pytest.mark.parametrize("sizes, epochs, message", [
    ("32,48", "1", "has 2 value"), ("32,48", "2,5", "begin at epoch 1"), ("32,48", "1,1", "after the one before"),
    ("0,48", "1,3", "at least 1 px"), ("32,48", "1,11", "after the last epoch")])
def test_progressive_resizing_schedule_is_checked(sizes, epochs, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [("epoch_size", "10"), ("progressive_sizes", sizes), ("progressive_epochs", epochs)])
    ok = load_config(None, [("epoch_size", "10"), ("progressive_sizes", "32,40,48"), ("progressive_epochs", "1,4,8")])
    assert ok["progressive_sizes"] == [32, 40, 48] and ok["progressive_epochs"] == [1, 4, 8]
