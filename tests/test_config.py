"""Config: presets, overrides, validation messages; checkpoints: atomic writes, weights_only loads."""

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dmireid.config import PRESET_DIR, Config, load_config, parse_overrides, save_config
from dmireid.embedding.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from dmireid.errors import DmireidError

PRESETS = ["cc_market1501", "dmi_market1501", "dmi_msmt17", "dmi_dukemtmc", "dmi_veri776", "demo", "smoke"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_accepts_data_overrides(name):
    cfg = load_config(name, ["data.name=folder", "data.root=/x", "train.epochs=95"])
    assert (cfg.data.name, cfg.data.root, cfg.train.epochs) == ("folder", "/x", 95)


def test_repository_configs_folder_is_the_preset_folder():
    assert {p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")} == set(PRESETS)
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} == set(PRESETS)


RECIPE = {  # Trangle12/DCMIP, the code whose logs reach 86.7 / 40.7 mAP (issue 11 point 2)
    "method": "dmi", "train.schedule": "two_stage", "train.stage1_epochs": 40, "train.epochs": 90,
    "train.iters": 100, "data.height": 320, "data.width": 128, "memory.dcp_margins": [0.2, 0.0],
    "memory.mip_source": "online", "memory.ema_forward": "train", "memory.ema_buffers": False,
    "data.camera_rule": "cc", "data.erasing": "cc", "model.pretrained": "imagenet", "model.bn_group_size": 64,
    "train.batch_size": 256, "data.num_instances": 16, "train.lr": 3.5e-4, "train.step_size": 20, "train.seed": 1,
    "train.amp_extract": False, "train.stage2_init": "best", "memory.mip_instances": 16, "memory.momentum": 0.1,
    "memory.temperature": 0.05, "memory.ema_momentum": 0.999, "pseudo_labels.k1": 30, "pseudo_labels.k2": 6,
    "pseudo_labels.min_samples": 4, "model.arch": "resnet50", "model.pooling": "gem", "model.last_stride": 1,
}


def value(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("preset, eps, updates", [("dmi_market1501", 0.45, ["hard", "mean"]),
                                                  ("dmi_msmt17", 0.7, ["sequential", "mean"]),
                                                  ("dmi_dukemtmc", 0.7, ["sequential", "mean"])])
def test_paper_presets_are_the_recipe(preset, eps, updates):
    cfg = load_config(preset, [])
    assert {k: value(cfg, k) for k in RECIPE} == RECIPE
    assert cfg.pseudo_labels.eps == eps and cfg.memory.dcp_updates == updates


def test_recipe_values_are_the_dataclass_defaults():
    cfg = load_config(None, [])
    for key in ("memory.dcp_margins", "memory.mip_source", "memory.ema_forward", "memory.ema_buffers",
                "data.camera_rule", "data.erasing", "train.amp_extract", "train.stage2_init"):
        assert value(cfg, key) == RECIPE[key], key
    assert cfg.train.amp_dtype == "bf16"  # ours (fp16 + GradScaler is the peer's)


def test_cluster_contrast_preset_keeps_its_own_settings():
    cc = load_config("cc_market1501")
    assert (cc.method, cc.train.schedule, cc.train.epochs, cc.train.iters) == ("cc", "single", 50, 200)
    assert (cc.data.height, cc.data.width, cc.pseudo_labels.eps, cc.memory.cc_update) == (256, 128, 0.6, "sequential")
    veri = load_config("dmi_veri776")
    assert (veri.data.height, veri.data.width, veri.pseudo_labels.eps, veri.data.name) == (224, 224, 0.6, "veri776")


def test_overrides_are_typed():
    cfg = load_config(None, ["train.lr=1e-3", "train.deterministic=true", "model.pretrained=none",
                             "memory.dcp_updates=[hard,mean,sequential]", "method=cc"])
    assert cfg.train.lr == 1e-3 and cfg.train.deterministic is True and cfg.model.pretrained is None
    assert cfg.memory.dcp_updates == ["hard", "mean", "sequential"] and cfg.method == "cc"
    assert parse_overrides(["a.b=1", "c=x=y"]) == {"a": {"b": "1"}, "c": "x=y"}


@pytest.mark.parametrize("overrides, fragment", [
    (["train.epoch=3"], "unknown config key 'train.epoch'"),
    (["trian.epochs=3"], "unknown config key 'trian'"),
    (["method=spcl"], "method 'spcl' is not a registered objective (known: cc, dmi"),
    (["train.epochs=three"], "config key train.epochs: expected int"),
    (["train.epochs=0"], "train.epochs must be >= 1"),
    (["memory.dcp_updates=[hard,median]"], "memory.dcp_updates"),
    (["train.batch_size=100"], "must be a multiple of data.num_instances"),
    (["pseudo_labels.eps=1.5"], "pseudo_labels.eps must be in (0, 1)"),
    (["device=tpu"], "device 'tpu'"),
    (["train.deterministic=maybe"], "expected true or false"),
    (["epochs"], "not of the form key=value"),
])
def test_bad_config_gives_one_line_naming_the_key(overrides, fragment):
    with pytest.raises(DmireidError) as info:
        load_config(None, overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(DmireidError, match="config file 'nope.yaml' not found"):
        load_config("nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(DmireidError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("smoke", ["train.epochs=5"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["train"]["epochs"] == 5
    assert load_config(None, base=cfg.to_dict()) == cfg
    assert Config() == load_config()


def test_checkpoint_round_trip_is_weights_only_safe(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    payload = {"config": Config().to_dict(), "model": {"w": torch.randn(3, 2)}, "rng": capture_rng_state(),
               "best": {"mAP": 0.5, "epoch": 2, "encoder": "momentum"}}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    save_checkpoint(payload, tmp_path / "last.pt")
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # no arbitrary code on load
    assert state["format"] == "dmireid/1" and torch.equal(state["model"]["w"], payload["model"]["w"])
    restore_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "last.pt")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DmireidError, match="disk full; the previous checkpoint is intact") as info:
        save_checkpoint({"model": {"w": torch.zeros(2)}}, tmp_path / "last.pt")
    assert "last.pt" in str(info.value)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unreadable_checkpoint_is_one_line(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DmireidError, match="cannot be read") as info:
        load_checkpoint(tmp_path / "x.pt")
    assert "\n" not in str(info.value)
    with pytest.raises(DmireidError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
