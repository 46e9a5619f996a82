"""Loading is parsing: reading a config or a checkpoint runs no code of it. Every model-use command
and the Python API leave a checkpoint's plug-ins alone (a marker file that the plug-in writes when
imported never appears); they import one only when named (``--plugins``). A checkpoint of a plug-in
objective and labeler is used without them; one of a plug-in backbone says which plug-in to pass."""

import importlib.util

import pytest
import torch
from torch import nn

from dmireid import build
from dmireid.embedding.checkpoint import load_checkpoint, save_checkpoint
from dmireid.cli import main
from dmireid.config import config_from_dict, load_config
from dmireid.embedding import FeatureExtractor, load_encoder
from dmireid.inference import cluster_folder, export_onnx, visualize_run
from dmireid.models import BACKBONES, register_backbone

MARKER_PLUGIN = '''
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the plug-in ran")

from dmireid.objectives import ClusterContrast, register_objective
from dmireid.pseudo_labels import JaccardDBSCAN, register_labeler

register_objective("marker_objective", ClusterContrast, overwrite=True)
register_labeler("marker_labeler", JaccardDBSCAN, overwrite=True)
'''
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


@pytest.fixture(scope="module")
def plugin_checkpoint(tmp_path_factory, synthetic_root):
    """A checkpoint whose config names a plug-in file, and a method and labeler only that file registers."""
    folder = tmp_path_factory.mktemp("plugin")
    plugin = folder / "marker_plugin.py"
    plugin.write_text(MARKER_PLUGIN)
    cfg = load_config("smoke", [f"plugins=[{plugin}]", "method=marker_objective", "pseudo_labels.labeler=marker_labeler",
                                "data.name=market1501", f"data.root={synthetic_root}"])
    torch.manual_seed(0)
    state = build.model(cfg).state_dict()
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "model": state, "ema_model": state}, folder / "last.pt")
    return plugin, folder / "last.pt", folder / "IMPORTED"


def test_no_command_and_no_api_imports_a_checkpoints_plugins(plugin_checkpoint, synthetic_root, tmp_path):
    plugin, ckpt, marker = plugin_checkpoint
    assert not marker.exists()  # load_config above named the plug-in without importing it
    queries = sorted(str(p) for p in (synthetic_root / "query").glob("*.jpg"))[:3]
    gallery = sorted(str(p) for p in (synthetic_root / "bounding_box_test").glob("*.jpg"))[:12]
    commands = {
        "evaluate": ["evaluate", str(ckpt), "--quiet"],
        "extract": ["extract", str(ckpt), *queries, "--out", str(tmp_path / "q.npz"), "--quiet"],
        "search": ["search", str(ckpt), "--query", queries[0], "--gallery", *gallery, "--topk", "3", "--quiet"],
        "cluster": ["cluster", str(ckpt), *gallery, "--out", str(tmp_path / "groups"), "--min-samples", "2", "--quiet"],
        "visualize": ["visualize", str(ckpt), "--out", str(tmp_path / "vis"), "--num-queries", "2", "--quiet"],
    }
    if HAS_ONNX:
        commands["export"] = ["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]
    for name, argv in commands.items():  # the objective and the labeler are plug-ins': none is needed
        assert main(argv) == 0, name
        assert not marker.exists(), f"dmireid {name} imported the checkpoint's plug-in"

    state = load_checkpoint(ckpt)
    config_from_dict(state["config"])
    load_config(base=state["config"])
    load_encoder(state)
    extractor = FeatureExtractor(ckpt, device="cpu")
    assert extractor(queries).shape == (3, 512)
    visualize_run(ckpt, tmp_path / "vis2", num_queries=1, progress=False)
    cluster_folder(extractor, gallery, tmp_path / "groups2", min_samples=2, progress=False)
    if HAS_ONNX:
        export_onnx(extractor, tmp_path / "m2.onnx")
    assert not marker.exists(), "the Python API imported the checkpoint's plug-in"

    # the control: a plug-in named by the user is imported (so every check above could fail)
    assert main(["extract", str(ckpt), queries[0], "--out", str(tmp_path / "p.npz"), "--quiet",
                 "--plugins", str(plugin)]) == 0
    assert marker.exists()


class MarkerNet(nn.Module):
    out_channels = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)

    def forward(self, x):
        return self.conv(x)


BACKBONE_PLUGIN = f'''
from dmireid.models import register_backbone
from {__name__} import MarkerNet

register_backbone("marker_net", lambda name, pretrained, last_stride: MarkerNet(), overwrite=True)
'''


def test_a_plugin_backbone_checkpoint_names_the_plugin_to_pass(tmp_path, synthetic_root, capsys):
    plugin = tmp_path / "net_plugin.py"
    plugin.write_text(BACKBONE_PLUGIN)
    register_backbone("marker_net", lambda name, pretrained, last_stride: MarkerNet(), overwrite=True)
    try:
        cfg = load_config("smoke", [f"plugins=[{plugin}]", "model.arch=marker_net"])
        state = build.model(cfg).state_dict()
    finally:
        del BACKBONES._items["marker_net"]  # now as where the plug-in is absent
    ckpt = tmp_path / "last.pt"
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "model": state, "ema_model": None}, ckpt)
    image = str(sorted((synthetic_root / "query").glob("*.jpg"))[0])
    capsys.readouterr()
    assert main(["extract", str(ckpt), image, "--out", str(tmp_path / "f.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.arch 'marker_net' is not a registered backbone" in err
    assert f"--plugins {plugin}" in err
    try:
        assert main(["extract", str(ckpt), image, "--out", str(tmp_path / "f.npz"), "--quiet",
                     "--plugins", str(plugin)]) == 0
    finally:
        BACKBONES._items.pop("marker_net", None)
