"""The dmi_veri776 preset: the DMI recipe with the Cluster Contrast line's VeRi data settings
(README / run_code.sh: 224x224, eps 0.6, 400 iterations)."""

from dmireid.config import load_config
from dmireid.data import find_dataset


def test_dmi_veri776_preset_holds_the_cluster_contrast_veri_settings():
    cfg = load_config("dmi_veri776")
    assert (cfg.method, cfg.data.name, find_dataset(cfg.data.name)[0]) == ("dmi", "veri776", "veri776")
    assert (cfg.data.height, cfg.data.width, cfg.data.num_instances) == (224, 224, 16)
    assert (cfg.data.camera_rule, cfg.data.erasing) == ("cc", "cc")
    assert (cfg.pseudo_labels.eps, cfg.pseudo_labels.k1, cfg.pseudo_labels.k2, cfg.pseudo_labels.min_samples) == (
        0.6, 30, 6, 4)
    assert (cfg.memory.momentum, cfg.memory.temperature) == (0.1, 0.05)
    t = cfg.train
    assert (t.iters, t.batch_size, t.lr, t.weight_decay, t.step_size, t.seed) == (400, 256, 3.5e-4, 5e-4, 20, 1)
    assert (t.schedule, t.stage1_epochs, t.epochs) == ("two_stage", 40, 90)  # the DMI recipe's schedule
    assert (cfg.memory.dcp_margins, cfg.memory.mip_source, cfg.model.pretrained) == ([0.2, 0.0], "online", "imagenet")
    assert (cfg.model.arch, cfg.model.pooling, cfg.model.last_stride) == ("resnet50", "gem", 1)
