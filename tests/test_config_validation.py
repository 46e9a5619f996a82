"""Every value a later stage would reject is rejected by load_config, one line naming the key
(one case or more per key family), and the warnings of a setting that silently hurts."""

import logging

import pytest

from dmireid.config import load_config
from dmireid.errors import DmireidError

CASES = {
    "train": [("train.batch_size=0", "train.batch_size must be >= 1"), ("train.iters=0", "train.iters must be >= 1"),
              ("train.step_size=0", "train.step_size must be >= 1"), ("train.gamma=0", "train.gamma must be > 0"),
              ("train.extract_batch_size=0", "train.extract_batch_size"), ("train.max_empty_epochs=0", "max_empty"),
              ("train.schedule=two_stage", "train.stage1_epochs must be in [1, train.epochs)"),
              ("train.weight_decay=-1", "train.weight_decay"), ("train.seed=-1", "train.seed"),
              ("train.amp_dtype=fp8", "train.amp_dtype"), ("train.stage2_init=first", "train.stage2_init")],
    "data": [("data.num_instances=0", "data.num_instances must be >= 1"),
             ("data.num_instances=32", "data.num_instances (32) must be <= train.batch_size (16)"),
             ("data.height=8", "data.height and data.width"), ("data.num_workers=-1", "data.num_workers"),
             ("data.name=nope", "data.name 'nope' is not a registered dataset"),
             ("data.options.colour=red", "data.options.colour: unknown option(s) colour for dataset 'synthetic'"),
             ("data.options.num_ids=many", "data.options.num_ids='many': dataset 'synthetic' expects an integer"),
             ("data.camera_rule=random", "data.camera_rule"), ("data.erasing=none", "data.erasing")],
    "model": [("model.arch=resnet7", "model.arch 'resnet7' is not a registered backbone"),
              ("model.bn_group_size=-1", "model.bn_group_size must be >= 0"),
              ("model.bn_group_size=5", "must be a multiple of model.bn_group_size"),
              ("model.gem_p=0", "model.gem_p must be > 0"), ("model.last_stride=3", "model.last_stride must be 1 or 2"),
              ("model.pooling=max", "model.pooling"),
              ("model.options.depth=3", "model.options.depth: unknown option(s) depth for backbone 'resnet18'"),
              ("model.options.last_stride=2", "model.options.last_stride: backbone 'resnet18' gets last_stride from "
                                              "model.last_stride")],
    "pseudo_labels": [("pseudo_labels.k2=40", "pseudo_labels.k2 (40) must be <= pseudo_labels.k1 (10)"),
                      ("pseudo_labels.k1=1", "pseudo_labels.k1 must be >= 2"),
                      ("pseudo_labels.min_samples=0", "pseudo_labels.min_samples"),
                      ("pseudo_labels.labeler=leiden", "pseudo_labels.labeler 'leiden' is not a registered labeler"),
                      ("pseudo_labels.camera_balance=maybe", "pseudo_labels.camera_balance: expected true or false"),
                      ("pseudo_labels.k1_inter=0", "k1_intra, k1_inter, k2_intra and k2_inter must be >= 1"),
                      ("pseudo_labels.k2_intra=x", "pseudo_labels.k2_intra: expected int"),
                      ("pseudo_labels.options.k=3",
                       "pseudo_labels.options.k: unknown option(s) k for labeler 'jaccard_dbscan'"),
                      ("pseudo_labels.options.k1=3", "pseudo_labels.options.k1: labeler 'jaccard_dbscan' gets k1 from "
                                                     "pseudo_labels.k1"),
                      ("pseudo_labels.knn_backend=annoy", "pseudo_labels.knn_backend")],
    "memory": [("memory.dcp_margins=[0.2,0,0]", "memory.dcp_margins has 3 value(s)"),
               ("memory.dcp_margins=[-0.1]", "memory.dcp_margins must be >= 0"),
               ("memory.temperature=0", "memory.temperature must be > 0"),
               ("memory.momentum=1", "memory.momentum must be in [0, 1)"),
               ("memory.mip_weight=-1", "memory.mip_weight"), ("memory.mip_instances=0", "memory.mip_instances"),
               ("memory.mip_source=ema", "memory.mip_source"), ("memory.ema_forward=test", "memory.ema_forward"),
               ("memory.camera_proxies=2", "memory.camera_proxies: expected true or false"),
               ("memory.camera_intra_weight=-1", "memory.camera_intra_weight must be >= 0"),
               ("memory.camera_inter_weight=-0.5", "memory.camera_inter_weight must be >= 0"),
               ("memory.camera_hard_negatives=-1", "memory.camera_hard_negatives must be >= 0"),
               ("memory.camera_temperature=0", "memory.camera_temperature must be > 0"),
               ("memory.camera_momentum=1", "memory.camera_momentum must be in [0, 1)")],
    "run": [("method=spcl", "method 'spcl' is not a registered objective"), ("device=gpu", "device 'gpu'"),
            ("device=cuda:x", "device 'cuda:x'"), ("output_dir=", "output_dir must not be empty"),
            ("objective_options.smoothing=0.2", "objective_options.smoothing: unknown option(s) smoothing for "
                                                "objective 'dmi' (known: none)")],
}


@pytest.mark.parametrize("override, fragment", [case for family in CASES.values() for case in family],
                         ids=[case[0] for family in CASES.values() for case in family])
def test_bad_value_is_one_line_naming_the_key(override, fragment):
    with pytest.raises(DmireidError) as info:
        load_config("smoke", [override])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_plugins_are_imported_by_train_not_by_load_config(tmp_path):
    from dmireid.engine import train

    cfg = load_config("smoke", ["plugins=[no_such_module]", f"output_dir={tmp_path / 'run'}",
                                f"data.root={tmp_path / 'never'}"])  # reading a config imports nothing
    with pytest.raises(DmireidError, match="plugins: cannot import 'no_such_module'") as info:
        train(cfg, progress=False)
    assert "\n" not in str(info.value) and not (tmp_path / "never").exists()


def test_short_margin_list_pads_with_zero():
    cfg = load_config("smoke", ["memory.dcp_updates=[hard,mean,sequential]", "memory.dcp_margins=[0.2]"])
    assert cfg.memory.dcp_margins == [0.2, 0.0, 0.0]


def test_missing_pretrained_file_stops_before_any_work(tmp_path):
    from dmireid.engine import train

    cfg = load_config("smoke", [f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'never'}",
                                f"model.pretrained={tmp_path / 'missing.pth'}"])
    with pytest.raises(DmireidError, match=r"model.pretrained .*missing.pth.* is neither imagenet, none nor"):
        train(cfg, progress=False)
    assert not (tmp_path / "never").exists()  # the data was not generated


@pytest.mark.parametrize("name, warns", [("market1501", True), ("synthetic", False)])
def test_real_dataset_without_pretrained_weights_warns(caplog, name, warns):
    from dmireid.build import warn_without_pretrained

    cfg = load_config("smoke", [f"data.name={name}", "model.pretrained=none"])
    with caplog.at_level(logging.WARNING):
        warn_without_pretrained(cfg)
    assert ("the published numbers assume ImageNet weights" in caplog.text) is warns
    caplog.clear()
    cfg.model.pretrained = "imagenet"
    warn_without_pretrained(cfg)
    assert caplog.text == ""


def test_frozen_momentum_statistics_warn(caplog):
    from dmireid.build import warn_frozen_momentum_statistics

    with caplog.at_level(logging.WARNING):
        warn_frozen_momentum_statistics(load_config("smoke", ["memory.ema_buffers=false", "memory.ema_forward=eval"]))
        assert "never change" in caplog.text
        caplog.clear()
        warn_frozen_momentum_statistics(load_config("smoke", []))
        assert caplog.text == ""


def test_camera_balance_with_another_labeler_is_one_line():
    with pytest.raises(DmireidError, match="camera_balance applies to the jaccard_dbscan labeler, not 'infomap'"):
        load_config("smoke", ["pseudo_labels.labeler=infomap", "pseudo_labels.camera_balance=true"])


@pytest.mark.parametrize("key", ["memory.camera_proxies", "pseudo_labels.camera_balance"])
def test_camera_options_on_a_one_camera_dataset_stop_before_any_extraction(tmp_path, monkeypatch, key):
    from dmireid.engine import train
    from dmireid.engine.session import TrainingSession

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted")

    monkeypatch.setattr(TrainingSession, "extract", no_extraction, raising=False)
    from PIL import Image

    crops = tmp_path / "crops"  # a folder of unlabelled images: no camera ids (all 0)
    crops.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 64), (40 * i, 20, 200)).save(crops / f"{i}.png")
    cfg = load_config("smoke", [f"output_dir={tmp_path / 'run'}", f"data.root={crops}", "data.name=folder",
                                "data.options={}", f"{key}=true"])
    with pytest.raises(DmireidError) as info:
        train(cfg, progress=False)
    message = str(info.value)
    assert f"{key}=true needs training images from at least two cameras" in message and "\n" not in message
    assert "data.name=folder" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
