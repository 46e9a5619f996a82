"""The two-stage schedule (stage 1: DCP only; stage 2: DCP + MIP + momentum encoder) survives SIGKILL
at and after the stage boundary: the re-run ends bit-identical to an uninterrupted run."""

import json

import pytest

from dmireid.embedding.checkpoint import load_checkpoint
from test_resume_faults import assert_same_run, run_cli

TWO_STAGE = ["--config", "smoke", "train.schedule=two_stage", "train.stage1_epochs=1", "train.epochs=3",
             "train.eval_every=1"]


def args(tmp_path, name="run"):
    return [*TWO_STAGE, f"output_dir={tmp_path / name}", f"data.root={tmp_path.parent / 'synthetic-smoke'}"]


def die_once(marker, target):
    """A prelude that SIGKILLs the process once, right after ``Trainer.<target>`` returns (``step``:
    after a :class:`~dmireid.engine.TrainStep` call of the third epoch)."""
    owner, method = ("TrainStep", "__call__") if target == "step" else ("Trainer", target)
    return (
        "import os, signal\n"
        "import dmireid.engine as _e\n"
        f"_orig = _e.{owner}.{method}\n"
        "def _dying(self, *a, **k):\n"
        "    out = _orig(self, *a, **k)\n"
        f"    if {target!r} != 'step' or a[0].epoch == 2:\n"
        f"        if not os.path.exists({str(marker)!r}):\n"
        f"            open({str(marker)!r}, 'w').close(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return out\n"
        f"_e.{owner}.{method} = _dying\n"
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-stage-reference")
    code, _, err = run_cli(args(tmp))
    assert code == 0, err
    assert "stage 2: starting from the best stage-1 weights" in err
    return tmp / "run"


def test_reference_runs_the_two_stages(reference):
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert "loss_mip" not in records[0] and "mAP_ema" not in records[0]  # stage 1: DCP only, no θ'
    assert all("loss_mip" in r and "mAP_ema" in r for r in records[1:])
    assert load_checkpoint(reference / "last.pt")["ema_model"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("target", ["start_stage_two", "step"])
def test_sigkill_after_the_stage_boundary_resumes_bit_identical(tmp_path, reference, target):
    # start_stage_two: killed right after stage 2 began (last.pt is stage 1's, no θ');
    # step: killed in the second stage-2 epoch (last.pt holds θ' and the stage-2 optimiser).
    code, _, err = run_cli(args(tmp_path), prelude=die_once(tmp_path / "killed", target))
    assert code == -9, err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == (1 if target == "start_stage_two" else 2)
    code, _, err = run_cli(args(tmp_path))
    assert code == 0, err
    assert "resumed from" in err
    assert_same_run(reference, tmp_path / "run")
