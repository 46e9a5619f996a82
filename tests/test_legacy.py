"""Files written by dmireid 0.1.0 (tests/data/legacy_v0): the same run gives the same metrics, and
its checkpoint still loads everywhere (evaluate, extract, export, resume)."""

import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch

from dmireid.embedding.checkpoint import load_checkpoint
from dmireid.cli import main
from dmireid.config import load_config, upgrade_config_dict

LEGACY = Path(__file__).parent / "data" / "legacy_v0"
# the 0.1.0 behaviour, spelled as today's keys (defaults may move to the peer recipe's values)
OLD_VARIANT = ["memory.dcp_margins=[0.0,0.0]", "memory.mip_source=momentum", "memory.ema_forward=eval",
               "memory.ema_buffers=true", "data.camera_rule=spread", "data.erasing=torchvision",
               "train.amp_extract=true"]
TIMING = ("time_", "images_per_s")
ADDED_SINCE = ("cluster_cross_camera_share", "cluster_cameras_mean")  # label-free diagnostics new in 0.2


def metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(TIMING) and k not in ADDED_SINCE}
            for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory):
    """The 0.1.0 smoke checkpoint unpacked into a run folder (config.yaml + last.pt)."""
    run = tmp_path_factory.mktemp("legacy") / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(lzma.decompress((LEGACY / "smoke_dmi_last.pt.xz").read_bytes()))
    shutil.copy(LEGACY / "smoke_dmi_config.yaml", run / "config.yaml")
    return run


def golden_metrics(method: str) -> Path:
    """The 0.1.0 code's smoke metrics on this CPU's kernel family (training steps differ in the last
    bits between AVX512 and AVX2 convolution kernels; both files were written by the 0.1.0 code, commit 949b32c)."""
    capability = torch.backends.cpu.get_cpu_capability()
    path = LEGACY / f"smoke_{method}_metrics{'' if capability == 'AVX512' else f'.{capability}'}.jsonl"
    if not path.exists():
        pytest.skip(f"no 0.1.0 golden metrics for CPU capability {capability} ({path.name}): run the 0.1.0 code here")
    return path


@pytest.mark.parametrize("method", ["dmi", "cc"])
def test_smoke_metrics_identical_to_0_1_0(tmp_path, method):
    from dmireid.engine import train

    cfg = load_config("smoke", [f"method={method}", f"output_dir={tmp_path / 'run'}",
                                f"data.root={tmp_path / 'synth'}", *OLD_VARIANT])
    train(cfg, progress=False)
    assert metrics(tmp_path / "run" / "metrics.jsonl") == metrics(golden_metrics(method))


def test_old_keys_are_mapped():
    old = load_checkpoint_config()
    assert "synthetic_ids" in old["data"] and "dcp_margin" in old["memory"]
    new = upgrade_config_dict(old)
    assert new["data"]["options"] == {"num_ids": 24, "num_cameras": 3, "seed": 0, "height": 64, "width": 32}
    assert new["memory"]["dcp_margins"] == [0.0, 0.0]
    upgraded = upgrade_config_dict({"memory": {"dcp_margin": 0.2, "dcp_updates": ["mean", "hard"]}})
    assert upgraded["memory"]["dcp_margins"] == [0.0, 0.2]  # 0.1.0 applied it to hard sets only
    assert "dcp_margin" not in upgraded["memory"] and upgraded["data"]["camera_rule"] == "spread"
    assert upgrade_config_dict({"data": {"name": "market1501", "synthetic_ids": 5}})["data"] == {"name": "market1501"}
    cfg = load_config(base=old)
    assert cfg.data.options["num_ids"] == 24 and cfg.memory.dcp_margins == [0.0, 0.0]
    assert (cfg.data.camera_rule, cfg.data.erasing, cfg.memory.ema_forward) == ("spread", "torchvision", "eval")


def load_checkpoint_config() -> dict:
    import yaml

    return yaml.safe_load((LEGACY / "smoke_dmi_config.yaml").read_text())


def test_legacy_checkpoint_extracts_and_exports(legacy_run, synthetic_root, tmp_path, capsys):
    from dmireid import FeatureExtractor

    extractor = FeatureExtractor(legacy_run / "last.pt", device="cpu")
    assert extractor.encoder == "momentum" and (extractor.height, extractor.width) == (64, 32)
    assert extractor.config.data.options["num_ids"] == 24
    images = sorted(str(p) for p in (Path(synthetic_root) / "query").glob("*.jpg"))[:3]
    features = extractor(images)
    assert features.shape == (3, 512) and torch.isfinite(features).all()
    assert main(["extract", str(legacy_run / "last.pt"), *images, "--out", str(tmp_path / "f.npz"), "--quiet"]) == 0
    assert main(["export", str(legacy_run / "last.pt"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_legacy_checkpoint_evaluates(legacy_run, tmp_path, capsys):
    code = main(["evaluate", str(legacy_run / "last.pt"), f"data.root={tmp_path / 'synth'}", "--quiet",
                 "--json", str(tmp_path / "m.json")])
    assert code == 0
    assert set(json.loads((tmp_path / "m.json").read_text())) >= {"mAP", "rank1", "mINP"}


def test_legacy_run_resumes(legacy_run, tmp_path):
    from dmireid.engine import train

    run = tmp_path / "run"
    shutil.copytree(legacy_run, run)
    cfg = load_config(run / "config.yaml", [f"output_dir={run}", f"data.root={tmp_path / 'synth'}", "train.epochs=3"])
    assert (cfg.data.camera_rule, cfg.memory.ema_forward, cfg.memory.ema_buffers) == ("spread", "eval", True)
    results = train(cfg, resume=run, progress=False)
    assert results["last"]["epoch"] == 2 and load_checkpoint(run / "last.pt")["epoch"] == 3
