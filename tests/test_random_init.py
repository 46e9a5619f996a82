"""`dmireid evaluate --random-init` is seeded: it evaluates exactly the weights training starts from."""

import json

import torch

from dmireid import build
from dmireid.cli import main
from dmireid.config import load_config
from dmireid.engine import Trainer
from dmireid.embedding import evaluate_model


def test_random_init_is_repeatable_and_is_the_training_start(tmp_path, capsys):
    root = tmp_path.parent / "synthetic-smoke"
    outputs = []
    for i in range(2):
        out = tmp_path / f"m{i}.json"
        assert main(["evaluate", "--random-init", "--config", "smoke", f"data.root={root}", "--quiet",
                     "--json", str(out)]) == 0
        outputs.append(json.loads(out.read_text()))
    assert outputs[0] == outputs[1]  # two calls, the same numbers

    cfg = load_config("smoke", [f"data.root={root}", f"output_dir={tmp_path / 'run'}"])
    trainer = Trainer.from_config(cfg, progress=False)
    trainer.prepare()  # exactly what training does before its first epoch
    ex = build.extraction(cfg)
    start = evaluate_model(trainer.unwrapped, trainer.dataset, ex.height, ex.width, torch.device("cpu"), ex.batch_size,
                           ex.num_workers, progress=False)
    assert start == outputs[0]

    other = tmp_path / "seed2.json"
    assert main(["evaluate", "--random-init", "--config", "smoke", f"data.root={root}", "--quiet", "train.seed=2",
                 "--json", str(other)]) == 0
    assert json.loads(other.read_text()) != outputs[0]  # the seed is what fixes the weights
