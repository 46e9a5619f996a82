"""The composition root (dmireid.build): component defaults equal the config's, hooks add to the
defaults, the state that crosses layers has one owner, and one option check serves the four plug-in kinds."""

import ast
import inspect
import json
from pathlib import Path

import pytest

from dmireid import build
from dmireid.config import DataConfig, MemoryConfig, ModelConfig, PseudoLabelConfig, TrainConfig, load_config
from dmireid.data import ClusterBatchSampler, build_train_transform
from dmireid.devices import autocast_dtype
from dmireid.engine import EvaluationHook, Hook, Trainer, train
from dmireid.errors import DmireidError
from dmireid.embedding import evaluate_model, extract_features
from dmireid.inference import cluster_folder, group_features
from dmireid.memory import CameraProxies, ClusterProxies, DiscrepantProxies, MomentumEncoder, MultiInstanceProxies
from dmireid.models import GeM, build_model
from dmireid.objectives import DMI
from dmireid.pseudo_labels import JaccardDBSCAN, build_labeler, cluster, jaccard_distance, knn

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"

# component, its parameter, the config section and field it stands for
DEFAULTS = [
    (build_train_transform, "erasing", DataConfig, "erasing"),
    (ClusterBatchSampler, "camera_aware", DataConfig, "camera_aware"),
    (ClusterBatchSampler, "camera_rule", DataConfig, "camera_rule"),
    (extract_features, "batch_size", TrainConfig, "extract_batch_size"),
    (extract_features, "num_workers", DataConfig, "num_workers"),
    (extract_features, "amp", TrainConfig, "amp_extract"),
    (evaluate_model, "batch_size", TrainConfig, "extract_batch_size"),
    (evaluate_model, "num_workers", DataConfig, "num_workers"),
    (autocast_dtype, "requested", TrainConfig, "amp_dtype"),
    *[(build_model, name, ModelConfig, name) for name in ("arch", "pretrained", "pooling", "gem_p", "last_stride",
                                                           "bn_group_size")],
    (GeM, "p", ModelConfig, "gem_p"),
    *[(JaccardDBSCAN, name, PseudoLabelConfig, name) for name in ("k1", "k2", "eps", "min_samples", "knn_backend",
                                                                   "camera_balance", "k1_intra", "k1_inter",
                                                                   "k2_intra", "k2_inter")],
    *[(group_features, name, PseudoLabelConfig, name) for name in ("k1", "k2", "eps", "min_samples", "knn_backend")],
    *[(cluster_folder, name, PseudoLabelConfig, name) for name in ("k1", "k2", "eps", "min_samples")],
    (build_labeler, "name", PseudoLabelConfig, "labeler"),
    (jaccard_distance, "k1", PseudoLabelConfig, "k1"), (jaccard_distance, "k2", PseudoLabelConfig, "k2"),
    (jaccard_distance, "knn_backend", PseudoLabelConfig, "knn_backend"),
    (cluster, "min_samples", PseudoLabelConfig, "min_samples"), (knn, "backend", PseudoLabelConfig, "knn_backend"),
    (ClusterProxies, "update", MemoryConfig, "cc_update"), (ClusterProxies, "momentum", MemoryConfig, "momentum"),
    (ClusterProxies, "temperature", MemoryConfig, "temperature"),
    (DiscrepantProxies, "updates", MemoryConfig, "dcp_updates"), (DiscrepantProxies, "margins", MemoryConfig, "dcp_margins"),
    (DiscrepantProxies, "momentum", MemoryConfig, "momentum"),
    (DiscrepantProxies, "temperature", MemoryConfig, "temperature"),
    (MultiInstanceProxies, "temperature", MemoryConfig, "temperature"),
    (MultiInstanceProxies, "negatives_topk", MemoryConfig, "mip_negatives_topk"),
    (MomentumEncoder, "alpha", MemoryConfig, "ema_momentum"), (MomentumEncoder, "buffers", MemoryConfig, "ema_buffers"),
    (DMI, "mip_weight", MemoryConfig, "mip_weight"), (DMI, "mip_source", MemoryConfig, "mip_source"),
    (CameraProxies.from_features, "momentum", MemoryConfig, "camera_momentum"),
    (CameraProxies.from_features, "temperature", MemoryConfig, "camera_temperature"),
    (CameraProxies.from_features, "hard_negatives", MemoryConfig, "camera_hard_negatives"),
]


def plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("component, parameter, section, name", DEFAULTS,
                         ids=[f"{c.__name__}.{p}" for c, p, _, _ in DEFAULTS])
def test_component_default_is_the_config_default(component, parameter, section, name):
    default = inspect.signature(component).parameters[parameter].default
    assert default is not inspect.Parameter.empty, f"{component.__name__}({parameter}) has no default"
    assert plain(default) == plain(getattr(section(), name))


def from_config(value: ast.AST) -> bool:
    """A keyword value read off the config (``d.camera_rule``), not a call's own argument (``rank``)."""
    return any(isinstance(node, ast.Attribute) for node in ast.walk(value))


def test_every_defaulted_parameter_build_fills_from_the_config_is_listed():
    """A keyword build.py fills from the config for a component that has a default for it is in DEFAULTS."""
    listed = {(c.__name__, p) for c, p, _, _ in DEFAULTS}
    components = {c.__name__: c for c, _, _, _ in DEFAULTS}
    tree = ast.parse(Path(build.__file__).read_text())
    passed = {(node.func.id, kw.arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id in components
              for kw in node.keywords if kw.arg and from_config(kw.value)}
    defaulted = {(name, p) for name, p in passed
                 if inspect.signature(components[name]).parameters.get(p, inspect.Parameter("x", 1)).default
                 is not inspect.Parameter.empty}
    assert defaulted and defaulted <= listed, defaulted - listed


# ------------------------------------------------------------------------------------------------- hooks
class Recorder(Hook):
    """A user's hook, defined outside the package: every moment, and a value added to the record."""

    def __init__(self):
        self.moments = []

    def before_train(self, trainer):
        self.moments.append("before_train")

    def before_epoch(self, trainer):
        self.moments.append("before_epoch")

    def after_pseudo_labels(self, trainer, labels):
        self.moments.append(f"after_pseudo_labels {len(labels)}")

    def after_iter(self, trainer, iteration):
        self.moments.append(f"after_iter {iteration}")

    def after_epoch(self, trainer):
        self.moments.append("after_epoch" + (" evaluated" if "mAP" in trainer.storage else ""))
        trainer.storage.put(mine=42)

    def after_train(self, trainer):
        self.moments.append("after_train")


def tiny(tmp_path, name, *overrides):
    return load_config("smoke", [f"output_dir={tmp_path / name}", f"data.root={tmp_path.parent / 'synthetic-smoke'}",
                                 "train.epochs=1", "train.iters=2", *overrides])


def test_hooks_add_to_the_defaults_and_see_every_moment(tmp_path):
    hook = Recorder()
    train(tiny(tmp_path, "run"), progress=False, hooks=[hook])
    assert hook.moments[:2] == ["before_train", "before_epoch"] and hook.moments[2].startswith("after_pseudo_labels")
    assert hook.moments[3:] == ["after_iter 1", "after_iter 2", "after_epoch evaluated", "after_train"]
    assert all((tmp_path / "run" / f).exists() for f in ("last.pt", "best.pt", "metrics.jsonl"))
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["mine"] == 42  # written after user hooks

    only = Recorder()
    train(tiny(tmp_path, "bare"), progress=False, hooks=[only], default_hooks=False)  # the documented replacement
    assert only.moments[-2:] == ["after_epoch", "after_train"]  # no evaluation hook
    assert not any((tmp_path / "bare" / f).exists() for f in ("last.pt", "best.pt", "metrics.jsonl"))


def test_stage_two_starts_from_the_best_weights_without_the_checkpoint_hook(tmp_path, caplog):
    cfg = tiny(tmp_path, "two", "train.schedule=two_stage", "train.epochs=2", "train.stage1_epochs=1")
    trainer = Trainer.from_config(cfg, progress=False, default_hooks=False)
    trainer.hooks = [EvaluationHook(trainer.evaluate_encoders, 1, 2)]  # evaluation, but no checkpoint hook: no best.pt
    trainer.setup()
    seen = {}
    start = trainer.start_stage_two

    def spy():
        seen["best"] = {k: v.clone() for k, v in trainer.stage2_start.items()}
        start()
        seen["model"] = {k: v.detach().cpu().clone() for k, v in trainer.unwrapped.state_dict().items()}

    trainer.start_stage_two = spy
    with caplog.at_level("INFO", logger="dmireid.train"):
        trainer.run()
    assert not (tmp_path / "two" / "best.pt").exists() and trainer.best["epoch"] >= 0
    assert "stage 2: starting from the best stage-1 weights (epoch 1" in caplog.text
    assert seen["best"].keys() == seen["model"].keys()
    assert all((seen["best"][k] == seen["model"][k]).all() for k in seen["best"])
    assert trainer.stage2_start is None  # dropped once stage 2 began


# ------------------------------------------------------------------------------------------------- options
def test_objective_options_are_checked_from_build_before_any_data(tmp_path):
    plugin = f"plugins=[{EXAMPLES / 'smoothed_cc.py'}]"
    for option, fragment in (("objective_options.smoothin=0.2", "objective_options.smoothin: unknown option(s) "
                                                                "smoothin for objective 'smoothed_cc' (known: smoothing)"),
                             ("objective_options.smoothing=abc", "objective_options.smoothing='abc': objective "
                                                                 "'smoothed_cc' expects a number")):
        with pytest.raises(DmireidError) as info:  # at load_config (values) or at build (names), never later
            train(load_config("smoke", [plugin, "method=smoothed_cc", option, f"output_dir={tmp_path / 'run'}",
                                        f"data.root={tmp_path / 'never'}"]), progress=False)
        assert str(info.value) == fragment
        assert not (tmp_path / "never").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, message", [
    ([f"plugins=[{EXAMPLES / 'kmeans_labeler.py'}]", "pseudo_labels.labeler=kmeans",
      "pseudo_labels.options.num_clusters=six"],
     "pseudo_labels.options.num_clusters='six': labeler 'kmeans' expects an integer"),
    ([f"plugins=[{EXAMPLES / 'csv_dataset.py'}]", "data.name=csv_list", "data.options.list_file=[a]"],
     "data.options.list_file=['a']: dataset 'csvlist' expects a string"),
    (["model.arch=timm:resnet10t", "model.options.token_pool=[1]"],
     "model.options.token_pool=[1]: backbone 'timm:resnet10t' expects a string or none"),
])
def test_plugin_options_are_one_line_errors_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(DmireidError) as info:  # load_config (a registered name) or train's plug-in import
        build.import_plugins(load_config("smoke", overrides))
    assert str(info.value) == message
