"""2-process gloo DDP on CPU matches the equivalent single-process run (pseudo-labels, memories)."""

import subprocess
import sys
import textwrap

import pytest
import torch

# Drives a training run and dumps, per epoch, the pseudo-labels and every memory buffer (rank 0).
DRIVER = textwrap.dedent('''
    import sys, torch
    from dmireid.config import load_config
    from dmireid.engine import Hook, Trainer
    from dmireid.engine import distributed as dist

    class Dump(Hook):
        def __init__(self):
            self.epochs = []
        def after_epoch(self, trainer):
            self.epochs.append({"labels": torch.from_numpy(trainer.current_labels.copy()),
                                "memory": {k: v.cpu().clone() for k, v in trainer.memory.state_dict().items()},
                                "mip": {k: v.cpu().clone() for k, v in trainer.mip.state_dict().items()}})

    out, *overrides = sys.argv[1:]
    torch.set_num_threads(1)
    trainer = Trainer(load_config("smoke", overrides), progress=False)
    dump = Dump()
    trainer.hooks = [dump] + trainer.default_hooks()
    trainer.setup()
    trainer.run()
    if dist.is_main():
        torch.save(dump.epochs, out)
    dist.cleanup()
''')


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # the venv's torchrun
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    data = tmp_path.parent / "synthetic-smoke"
    common = [f"data.root={data}", "train.epochs=2", "train.batch_size=16", "data.num_instances=4",
              "model.bn_group_size=8", "train.eval_every=100"]
    env = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"}
    single = subprocess.run([sys.executable, str(driver), str(tmp_path / "single.pt"),
                             f"output_dir={tmp_path / 'single'}", *common], capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([*torchrun, "--nproc_per_node=2", "--standalone", str(driver), str(tmp_path / "ddp.pt"),
                          f"output_dir={tmp_path / 'ddp'}", *common], capture_output=True, text=True, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "ddp.pt")
    assert len(a) == len(b) == 2
    for epoch_a, epoch_b in zip(a, b):
        assert torch.equal(epoch_a["labels"], epoch_b["labels"])
        for part in ("memory", "mip"):
            for key, value in epoch_a[part].items():
                torch.testing.assert_close(value, epoch_b[part][key], atol=1e-4, rtol=1e-4, msg=f"{part}.{key}")
    assert (tmp_path / "ddp" / "last.pt").exists() and not (tmp_path / "single" / "ddp").exists()
