"""benchmarks/gpu_check.py: its ``--tiny --device cpu`` form runs the device check's code in CI.

The script is run as a user runs it on a GPU machine: a subprocess, from another working
directory, with no PYTHONPATH to this repository and with faiss / onnx / tensorboard / timm made
unimportable (a ``sitecustomize`` that puts None in ``sys.modules``), as in a stock PyTorch image.
"""

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmark_modules import load_benchmark
from dmireid.errors import DmireidError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
BLOCKED = ("faiss", "onnx", "onnxruntime", "tensorboard", "timm")
ROWS = ["preset", "device", "settings", "data", "set-up s", "extraction s", "pseudo-labels s", "objective s",
        "iterations s", "evaluation s", "epoch s", "images/s", "peak GPU memory", "AMP vs fp32 loss", "total s",
        "machine"]


@functools.lru_cache(maxsize=None)
def load_script():
    return load_benchmark("gpu_check")


def stock_image_env(folder: Path) -> dict:
    """The environment of a stock PyTorch image: the optional packages unimportable, no repo on the path."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(folder), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("elsewhere")
    env = stock_image_env(cwd / "stock")
    probe = subprocess.run([sys.executable, "-c", "import faiss"], cwd=cwd, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "halted" in probe.stderr  # the blocking itself works
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--json", str(cwd / "r.json")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((cwd / "r.json").read_text()), done.stdout, cwd


def test_tiny_cpu_run_reports_every_phase_from_this_repository(tiny):
    report, _, cwd = tiny
    assert report["status"] == "done"
    assert Path(report["dmireid"]["path"]) == ROOT / "dmireid"  # not an installed copy
    assert "model.pretrained=none" in report["overrides"] and "pseudo_labels.knn_backend=torch" in report["overrides"]
    s = report["settings"]
    assert (s["model.arch"], s["model.pretrained"], s["train.batch_size"], s["train.iters"]) == ("resnet18", None, 16, 2)
    d = report["data"]
    assert d["generated"] and d["train_ids"] == 12 and d["train_images"] > 12 * 6  # ≥ 3 cameras × 2 images an id
    pl = report["pseudo_labels"]
    assert pl["labels_used"] == "true ids" and pl["clusters_used"] == d["train_ids"]
    assert pl["found_clusters"] >= 0 and 0 <= pl["found_outliers"] <= d["train_images"]
    assert set(pl["labeler_phases"]) >= {"kNN", "jaccard"}
    assert d["train_ids"] <= pl["theta_prime_images"] <= d["train_ids"] * s["memory.mip_instances"]
    p = report["phases"]
    for phase in ("imports", "setup", "extraction", "labeler", "pseudo_labels", "objective", "theta_prime_extraction",
                  "iterations", "epoch", "amp_check", "total"):
        assert p[phase] > 0, phase
    parts = p["extraction"] + p["pseudo_labels"] + p["objective"] + p["iterations"]
    assert abs(parts - p["epoch"]) <= 0.05 * p["epoch"] + 0.05  # the phases tile the epoch
    assert p["labeler"] <= p["pseudo_labels"] + 1e-6 and p["theta_prime_extraction"] <= p["objective"] + 1e-6
    t = report["throughput"]
    assert t["iterations"] == 2 and t["images_per_s"] > 0 and 0 <= t["data_wait_share"] < 1
    assert 0.5 < t["images_per_s"] / t["trainer_images_per_s"] < 2  # the same span, measured twice
    assert report["memory"] is None and report["knn_device"] == "cpu" and math.isfinite(report["loss"])
    a = report["amp"]
    bf16 = a["dtypes"]["bfloat16"]
    assert a["batch"] == 16 and not a["run_uses_amp"] and a["rel_diff"] == bf16["rel_diff"]
    assert bf16["rel_diff"] == pytest.approx(abs(bf16["loss"] - a["loss_fp32"]) / abs(a["loss_fp32"]))
    assert 0 < bf16["rel_diff"] < 0.05  # bf16 differs, but not wildly, from fp32
    assert set(bf16["terms_rel_diff"]) == {"loss_dcp", "loss_mip"}  # a stage-2 (DCP + MIP) objective
    assert sorted(p.name for p in cwd.iterdir()) == ["r.json", "stock"]  # nothing else left behind


def test_tiny_cpu_run_prints_the_table(tiny):
    report, stdout, _ = tiny
    row = {label.strip(): value.strip() for label, _, value in (line.partition("  ") for line in stdout.splitlines())}
    assert list(row) == ROWS + ["json"]
    assert row["peak GPU memory"].startswith("n/a")
    assert row["images/s"].startswith(f"{report['throughput']['images_per_s']:.0f} ")
    assert row["iterations s"].startswith(f"{report['phases']['iterations']:.1f} (2 iterations")
    assert f"{report['amp']['rel_diff']:.2e}" in row["AMP vs fp32 loss"]
    assert "arch=resnet18" in row["settings"] and "knn_backend=torch" in row["settings"]
    assert row["machine"] == harness_line(report["machine"]) and report["machine"]["cpu_model"] in row["machine"]


def harness_line(machine: dict) -> str:
    return load_benchmark("harness").machine_line(machine).split(": ", 1)[1]


def test_card_verdicts_by_hand():
    verdicts = load_script().card_verdicts
    assert verdicts(18.0, 20.5, 0.6) == {"24 GB": "yes", "40 GB": "yes", "48 GB": "yes"}  # 21.1 <= 22
    assert verdicts(21.0, 23.0, 0.6) == {"24 GB": "tight", "40 GB": "yes", "48 GB": "yes"}  # 23.6 > 22 >= 21.6
    assert verdicts(30.0, 41.0, 1.0) == {"24 GB": "no", "40 GB": "tight", "48 GB": "yes"}


def test_memory_report_by_hand(monkeypatch):
    """The CUDA arithmetic without a GPU: context = in use on the card − PyTorch's pool."""
    script = load_script()
    gib = script.GIB
    monkeypatch.setattr(script.torch.cuda, "mem_get_info", lambda device: (100 * gib, 139 * gib))  # 39 in use
    monkeypatch.setattr(script.torch.cuda, "memory_reserved", lambda device: 38 * gib)
    clock = script.PhaseClock(torch.device("cuda"))
    clock.peaks = {"before_iterations": {"allocated_gib": 3.0, "reserved_gib": 4.0},
                   "iterations": {"allocated_gib": 21.0, "reserved_gib": 23.0}}
    m = script.memory_report(clock, torch.device("cuda"))
    assert m["context_gib"] == pytest.approx(1.0) and m["total_gib"] == pytest.approx(139.0)
    assert (m["peak_allocated_gib"], m["peak_reserved_gib"]) == (21.0, 23.0)
    assert m["fits"] == {"24 GB": "tight", "40 GB": "yes", "48 GB": "yes"}  # 24 > 22 >= 22
    assert m["iterations"] == clock.peaks["iterations"]
    assert script.memory_report(clock, torch.device("cpu")) is None


def test_throughput_from_step_spans_by_hand():
    script = load_script()
    clock = script.PhaseClock(torch.device("cpu"))
    clock.step_spans = [(0.0, 1.0), (1.5, 2.5), (3.0, 4.0)]  # 0.5 s outside step before steps 2 and 3
    clock.marks.update(objective_done=-0.5, first_iter=1.1, last_iter=4.1)
    trainer = SimpleNamespace(loop=SimpleNamespace(batch_size=8), storage=SimpleNamespace(latest={"images_per_s": 5.0}))
    t = script.throughput(clock, trainer)
    assert t["iterations"] == 3 and t["first_iteration_s"] == pytest.approx(1.6)
    assert t["images_per_s"] == pytest.approx(2 * 8 / 3.0) and t["seconds_per_iteration"] == pytest.approx(1.5)
    assert t["data_wait_share"] == pytest.approx(1.0 / 3.0) and t["trainer_images_per_s"] == 5.0


@pytest.mark.parametrize("argv, message", [
    (["--preset", "no_such_preset"], "config file 'no_such_preset' not found"),
    (["--set", "train.no_such_key=1"], "unknown config key 'train.no_such_key'"),
])
def test_bad_settings_are_one_line_errors_that_leave_nothing_behind(tmp_path, monkeypatch, argv, message):
    script = load_script()
    monkeypatch.setattr(script.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(DmireidError, match=message):
        script.run(script.parse_args(["--tiny", "--device", "cpu", *argv]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_asking_for_cuda_without_one_fails_before_writing_data(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(DmireidError, match="device=cuda was asked for but no CUDA device"):
        script.run(script.parse_args(["--device", "cuda", "--data", str(tmp_path / "data")]))
    assert list(tmp_path.iterdir()) == []


SHARED = ROOT.parent / "shared"


@pytest.mark.skipif(not (SHARED / "data" / "cuhk03_pair1").is_dir(),
                    reason=f"the real images are not at {SHARED / 'data'} (research-only, outside the repository)")
def test_real_form_tiny_cpu_prints_the_bench_real_table(tmp_path):
    """``--real DATA --weights FILE --tiny --device cpu``: bench_real's protocol on a linked subset (one row)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run([sys.executable, str(SCRIPT), "--real", str(SHARED / "data" / "cuhk03_pair1"), "--weights",
                           str(SHARED / "weights" / "mobilenetv2_100_imagenet.pth"), "--tiny", "--device", "cpu",
                           "--out", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "tiny budget" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("| dmi_recipe | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) > 0 and int(cells[6]) >= 0  # a mAP and a cluster count were measured
    subset = tmp_path / "bench_real" / "subset" / "bounding_box_train"
    assert all(p.is_symlink() for p in subset.iterdir())  # the real images are linked, never copied
    assert len({p.name.split("_")[0] for p in subset.iterdir()}) == 24
