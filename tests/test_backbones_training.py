"""The new backbones train the smoke preset for one epoch from the CLI (issue 12 acceptance)."""

import json

import pytest

from dmireid.cli import main


@pytest.mark.parametrize("arch, extra", [("resnet50_ibn_a", []), ("timm:resnet10t", []),
                                         ("timm:vit_tiny_patch16_224", ["model.options.token_pool=cls"])])
def test_smoke_trains_one_epoch(tmp_path, arch, extra, capsys):
    run = tmp_path / "run"
    code = main(["train", "--config", "smoke", "--no-progress", f"model.arch={arch}", "train.epochs=1",
                 f"output_dir={run}", f"data.root={tmp_path.parent / 'synthetic-smoke'}", *extra])
    assert code == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["num_clusters"] >= 2 and record["loss"] > 0 and 0 <= record["mAP"] <= 1
    assert "Results after epoch 1" in capsys.readouterr().out


def test_wrong_architecture_file_is_one_line(tmp_path, capsys):
    import torch
    import torchvision

    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    code = main(["train", "--config", "smoke", "--no-progress", "model.arch=resnet50_ibn_a", f"model.pretrained={weights}",
                 f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path.parent / 'synthetic-smoke'}"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("dmireid: error:")]
    assert code == 2 and len(errors) == 1 and "first mismatched key layer1.0.bn1.IN.weight" in errors[0]
    assert "Traceback" not in err
