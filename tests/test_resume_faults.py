"""Long runs that survive: exact resume after SIGKILL, and every fault gives one line, loses nothing."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dmireid.config import load_config
from dmireid.embedding.checkpoint import load_checkpoint
from dmireid.engine import train
from dmireid.errors import DmireidError

MICRO = ["train.epochs=3", "train.eval_every=1"]


def micro(tmp_path, name="run", *overrides):
    return [f"output_dir={tmp_path / name}", f"data.root={tmp_path.parent / 'synthetic-smoke'}", *MICRO, *overrides]


def run_cli(args, env_extra=None, kill_after=None, prelude=""):
    """Run ``dmireid train`` in a fresh process; optionally SIGKILL it after ``kill_after`` seconds."""
    code = prelude + "from dmireid.cli import main; raise SystemExit(main(%r))" % (["train", "--no-progress", *args],)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def final_state(run_dir: Path):
    state = torch.load(run_dir / "last.pt", weights_only=True)
    return state, (run_dir / "metrics.jsonl").read_text()


def assert_same_run(a: Path, b: Path):
    state_a, metrics_a = final_state(a)
    state_b, metrics_b = final_state(b)
    strip = lambda text: [{k: v for k, v in json.loads(l).items() if not k.startswith(("time", "images_per"))}
                          for l in text.splitlines()]
    assert strip(metrics_a) == strip(metrics_b)
    for key in ("model", "ema_model"):
        for name, tensor in state_a[key].items():
            assert torch.equal(tensor, state_b[key][name]), f"{key}.{name} differs"
    assert state_a["optimizer"]["state"].keys() == state_b["optimizer"]["state"].keys()
    for k, v in state_a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], state_b["optimizer"]["state"][k]["exp_avg"])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    code, out, err = run_cli(["--config", "smoke", *micro(tmp)])
    assert code == 0, err
    return tmp / "run"


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_ends_bit_identical(tmp_path, reference_run):
    rng = random.Random(7)
    run = tmp_path / "run"
    kills = 0
    for _ in range(3):  # kill up to three times at random moments, then let it finish
        code, _, err = run_cli(["--config", "smoke", *micro(tmp_path)], kill_after=rng.uniform(3.0, 12.0))
        if code == 0:
            break
        assert code == -signal.SIGKILL, err
        kills += 1
    code, out, err = run_cli(["--config", "smoke", *micro(tmp_path)])
    assert code == 0, err
    assert kills >= 1 or "resumed from" in err
    assert_same_run(reference_run, run)


@pytest.mark.slow
def test_kill_during_checkpoint_save_keeps_last_good_and_resumes_exactly(tmp_path, reference_run):
    # The second save (end of epoch 2) is killed half-way through writing: last.pt must stay epoch 1.
    prelude = (
        "import os, signal, torch\n"
        "_save, _n = torch.save, [0]\n"
        "def _dying_save(obj, f, *a, **k):\n"
        "    _n[0] += 1\n"
        "    if _n[0] == 2:\n"
        "        f.write(b'partial' * 1000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _save(obj, f, *a, **k)\n"
        "torch.save = _dying_save\n"
    )
    code, _, _ = run_cli(["--config", "smoke", *micro(tmp_path)], prelude=prelude)
    assert code == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    code, _, err = run_cli(["--config", "smoke", *micro(tmp_path)])
    assert code == 0, err
    assert f"resumed from {tmp_path / 'run' / 'last.pt'} at epoch 1" in err
    assert_same_run(reference_run, tmp_path / "run")


def test_resume_flag_continues_and_extends_a_run(tmp_path, capsys):
    from dmireid.cli import main

    assert main(["train", "--config", "smoke", "--no-progress", *micro(tmp_path, "run", "train.epochs=1")]) == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress", "train.epochs=2"]) == 0
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2


def test_resume_from_incompatible_config_is_refused(tmp_path):
    train(load_config("smoke", micro(tmp_path, "run", "train.epochs=1")), progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(DmireidError, match=r"cannot resume from .*last.pt: its config differs \(method: 'dmi' -> 'cc'"):
        train(load_config("smoke", micro(tmp_path, "run", "method=cc")), progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_epoch_without_clusters_is_skipped_then_stops(tmp_path, caplog):
    cfg = load_config("smoke", micro(tmp_path, "run", "pseudo_labels.min_samples=60", "train.max_empty_epochs=2"))
    # the message names the labeler as it is configured (its repr), whichever labeler it is
    with pytest.raises(DmireidError, match=r"epoch 2: JaccardDBSCAN\(k1=10, k2=3, eps=0.6, min_samples=60, .*\) "
                                           r"found 0 cluster\(s\).*train.max_empty_epochs=2") as info:
        train(cfg, progress=False)
    assert "\n" not in str(info.value)
    assert "epoch 1: JaccardDBSCAN(k1=10" in caplog.text and "found 0 cluster(s)" in caplog.text  # the first warns
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # epoch 1 was still checkpointed


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from dmireid.memory import DiscrepantProxies

    cfg = load_config("smoke", micro(tmp_path))
    original, calls = DiscrepantProxies.loss, [0]

    def poisoned(self, f, y, *allowed):  # allowed: the optional camera-local mask (None here)
        calls[0] += 1
        loss = original(self, f, y, *allowed)
        return loss * float("nan") if calls[0] == cfg.train.iters + 3 else loss  # epoch 2, iteration 3

    monkeypatch.setattr(DiscrepantProxies, "loss", poisoned)
    with pytest.raises(DmireidError, match=r"loss became nan at epoch 2 iteration 3; stopped, the last good "
                                           r"checkpoint .*last.pt is kept"):
        train(cfg, progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())


def test_corrupt_images_are_skipped_or_stop_the_run(tmp_path, caplog):
    source = tmp_path.parent / "synthetic-smoke"
    train(load_config("smoke", micro(tmp_path, "warmup", "train.epochs=1")), progress=False)  # generates the data
    data = tmp_path / "corrupt"
    shutil.copytree(source, data)
    victims = sorted((data / "bounding_box_train").glob("*.jpg"))[:3]
    for path in victims:
        path.write_bytes(path.read_bytes()[:40])  # truncated JPEG
    base = micro(tmp_path, "skip", "data.name=market1501", f"data.root={data}", "train.epochs=1")
    train(load_config("smoke", base), progress=False)
    record = json.loads((tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["num_unreadable"] == 3 and "3 unreadable training image(s) left out" in caplog.text
    with pytest.raises(DmireidError, match=rf"unreadable training image {victims[0]} \(3 in all"):
        train(load_config("smoke", [*base, f"output_dir={tmp_path / 'stop'}", "data.corrupt_images=stop"]),
              progress=False)


def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    train(load_config("smoke", micro(tmp_path, "run", "train.epochs=1")), progress=False)
    good = (tmp_path / "run" / "last.pt").read_bytes()
    real_save = torch.save

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DmireidError, match=r"could not write checkpoint .*last.pt: disk full; the previous "
                                           r"checkpoint is intact"):
        train(load_config("smoke", micro(tmp_path, "run", "train.epochs=2")), progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "run" / "last.pt").read_bytes() == good


def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from dmireid.cli import main

    assert main(["train", "--config", "smoke", *micro(tmp_path, "run", "device=cuda")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dmireid: error: device=cuda was asked for but no CUDA device is available (use device=cpu or auto)"


def test_config_typo_on_command_line_is_one_line(capsys):
    from dmireid.cli import main

    assert main(["train", "--config", "smoke", "train.epoch=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dmireid: error: unknown config key 'train.epoch'") and err.count("\n") == 1
