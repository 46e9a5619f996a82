"""Config: presets, overrides, validation messages; checkpoints: atomic writes, weights_only loads."""

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dmireid.config import PRESET_DIR, Config, load_config, parse_overrides, save_config
from dmireid.engine.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from dmireid.errors import DmireidError

PRESETS = ["cc_market1501", "dmi_market1501", "dmi_msmt17", "dmi_dukemtmc", "dmi_veri776", "demo", "smoke"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_accepts_data_overrides(name):
    cfg = load_config(name, ["data.name=folder", "data.root=/x", "train.epochs=3"])
    assert (cfg.data.name, cfg.data.root, cfg.train.epochs) == ("folder", "/x", 3)


def test_repository_configs_folder_is_the_preset_folder():
    assert {p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")} == set(PRESETS)
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} == set(PRESETS)


def test_paper_presets_hold_the_spec_defaults():
    market = load_config("dmi_market1501")
    assert (market.method, market.train.epochs, market.train.iters, market.train.batch_size) == ("dmi", 50, 200, 256)
    assert (market.data.height, market.data.width, market.data.num_instances) == (256, 128, 16)
    assert (market.model.last_stride, market.model.pooling, market.model.bn_group_size) == (1, "gem", 64)
    assert market.memory.dcp_updates == ["hard", "mean"] and market.memory.mip_instances == 16
    assert load_config("dmi_msmt17").train.iters == 400
    assert load_config("cc_market1501").pseudo_labels.eps == 0.6


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
