"""End-to-end training on tiny synthetic data: CC and DMI complete, write checkpoints and metrics."""

import json
import math

import pytest
import torch

from dmireid.cli import main
from dmireid.config import load_config
from dmireid.embedding.checkpoint import load_checkpoint
from dmireid.engine import train

REQUIRED = {"epoch", "num_clusters", "num_outliers", "loss", "nmi", "ari", "pair_precision", "pair_recall", "lr"}


def smoke(tmp_path, *overrides):
    return load_config("smoke", [f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path.parent / 'synthetic-smoke'}",
                                 *overrides])


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["cc", "dmi"])
def test_tiny_training_completes_with_finite_losses(tmp_path, method):
    cfg = smoke(tmp_path, f"method={method}")
    results = train(cfg, progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"}
    lines = read_metrics(run)
    assert [r["epoch"] for r in lines] == [0, 1]
    for record in lines:
        assert REQUIRED <= record.keys()
        assert record["num_clusters"] >= 2 and math.isfinite(record["loss"]) and record["loss"] > 0
        assert 0 <= record["mAP"] <= 1 and 0 <= record["rank1"] <= 1
        assert ("mAP_ema" in record) == (method == "dmi")
        if method == "dmi":
            assert math.isfinite(record["loss_mip"]) and math.isfinite(record["loss_dcp"])
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["method"] == method
    assert (state["ema_model"] is not None) == (method == "dmi")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert results["last"]["epoch"] == 1 and results["run_dir"] == str(run)


def test_cli_train_prints_final_table(tmp_path, capsys):
    cfg = smoke(tmp_path)
    assert main(["train", "--config", "smoke", "--no-progress", f"output_dir={cfg.output_dir}",
                 f"data.root={cfg.data.root}", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "online (θ)" in out and "momentum (θ')" in out and "run folder:" in out and "R10" in out
    assert "best on test (selected on the test set" in out


def test_two_stage_schedule_switches_on_momentum_encoder(tmp_path):
    cfg = smoke(tmp_path, "train.schedule=two_stage", "train.stage1_epochs=1", "train.epochs=2")
    train(cfg, progress=False)
    lines = read_metrics(tmp_path / "run")
    assert "loss_mip" not in lines[0] and "mAP_ema" not in lines[0]
    assert "loss_mip" in lines[1] and "mAP_ema" in lines[1]


def test_evaluate_command_on_checkpoint_and_random_init(tmp_path, capsys):
    cfg = smoke(tmp_path, "train.epochs=1")
    train(cfg, progress=False)
    assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--quiet", "--json", str(tmp_path / "m.json")]) == 0
    saved = json.loads((tmp_path / "m.json").read_text())
    last = read_metrics(tmp_path / "run")[-1]
    assert saved["mAP"] == pytest.approx(last["mAP_ema"], abs=1e-9)  # default encoder: momentum
    assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--encoder", "online", "--quiet",
                 "--json", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["mAP"] == pytest.approx(last["mAP"], abs=1e-9)
    assert main(["evaluate", "--random-init", "--config", "smoke", "--quiet", f"data.root={cfg.data.root}"]) == 0
    assert "mAP" in capsys.readouterr().out
