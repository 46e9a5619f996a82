"""The run configuration's schema: one dataclass per section, defaults and the names each key takes.

Read and written by :mod:`dmireid.config` (YAML, overrides), checked by
:mod:`dmireid.config_validation`, turned into objects by :mod:`dmireid.build` only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .data.sampler import CAMERA_RULES
from .data.transforms import ERASING
from .memory.proxies import UPDATE_RULES
from .models.reid import POOLINGS
from .pseudo_labels.neighbours import BACKENDS

# the name lists belong to the components that act on them; the config keys take their values
UpdateRule = Literal[UPDATE_RULES]


@dataclass
class DataConfig:
    """Where the images come from and how they are fed."""

    name: str = "synthetic"  # a registered dataset: market1501 | msmt17 | dukemtmcreid | folder | synthetic | ...
    root: str | None = None  # dataset folder; synthetic: cache folder (default ~/.cache/dmireid)
    options: dict[str, Any] = field(default_factory=dict)  # the dataset loader's own options
    height: int = 256
    width: int = 128
    num_instances: int = 16  # K images per cluster in a P×K batch
    camera_aware: bool = True  # sampler prefers other cameras than the anchor's
    camera_rule: Literal[CAMERA_RULES] = "cc"  # how the camera-aware sampler picks the K-1 others (spread: ours)
    erasing: Literal[ERASING] = "cc"  # random-erasing implementation (CC's, or torchvision's)
    num_workers: int = 4
    corrupt_images: Literal["skip", "stop"] = "skip"  # unreadable training images


@dataclass
class ModelConfig:
    """Backbone, pooling and neck (spec §2)."""

    arch: str = "resnet50"  # a registered backbone: resnet18 | resnet34 | resnet50 | resnet50_ibn_a | timm:NAME
    pretrained: str | None = None  # none | imagenet (torch hub cache, else downloaded) | a weight file
    options: dict[str, Any] = field(default_factory=dict)  # the backbone's own options (e.g. timm's token_pool)
    pooling: Literal[POOLINGS] = "gem"
    gem_p: float = 3.0
    last_stride: int = 1
    bn_group_size: int = 64  # ghost BatchNorm group (0 = whole batch); 64 = the 4-GPU statistics
    channels_last: bool = True  # on CUDA only


@dataclass
class PseudoLabelConfig:
    """k-reciprocal Jaccard + DBSCAN (spec §1.2-3, §3)."""

    k1: int = 30
    k2: int = 6
    eps: float = 0.6
    min_samples: int = 4
    knn_backend: Literal[BACKENDS] = "auto"
    labeler: str = "jaccard_dbscan"  # a registered labeler: jaccard_dbscan | infomap | ground_truth | ...
    options: dict[str, Any] = field(default_factory=dict)  # a plug-in labeler's own options
    camera_balance: bool = False  # jaccard_dbscan: camera-aware k-reciprocal sets (CA-Jaccard CKRNNs + CLQE)
    k1_intra: int = 5  # camera_balance: reciprocal list length within the image's camera
    k1_inter: int = 20  # camera_balance: reciprocal list length among the other cameras
    k2_intra: int = 3  # camera_balance: query expansion, nearest in the own camera (self included)
    k2_inter: int = 3  # camera_balance: query expansion, nearest in the other cameras
    tracklets: bool = False  # tracklet-aware labels (pseudo_labels/tracklets.py): a tracklet is never split
    tracklet_level: Literal["image", "tracklet", "none"] = "image"  # cluster images (then vote), tracklet means, or none
    tracklet_min_samples: int = 2  # tracklet_level=tracklet: DBSCAN's min_samples, counted in tracklets
    tracklet_association: Literal["none", "mutual"] = "mutual"  # cross-camera mutual-NN links
    tracklet_link_similarity: float = 0.0  # the least cosine similarity of a link (camera-centred means)
    tracklet_noise: Literal["own", "drop"] = "own"  # a tracklet in no cluster: own pseudo-identity | outlier


@dataclass
class MemoryConfig:
    """Proxy memories and losses (spec §4). The CHOICE items of the spec are keys here."""

    temperature: float = 0.05
    momentum: float = 0.1  # weight of the old value in proxy momentum updates
    cc_update: UpdateRule = "sequential"  # method=cc
    dcp_updates: list[UpdateRule] = field(default_factory=lambda: ["hard", "mean"])  # method=dmi
    dcp_margins: list[float] = field(default_factory=lambda: [0.2, 0.0])  # one per DCP set: max(0, CE - margin)
    mip_instances: int = 16  # K_mip slots per cluster
    mip_weight: float = 1.0  # lambda
    mip_negatives_topk: int = 0  # 0 = every other cluster
    mip_source: Literal["momentum", "online"] = "online"  # which batch features replace the MIP slots
    ema_momentum: float = 0.999  # alpha of the momentum encoder
    ema_forward: Literal["train", "eval"] = "train"  # mode of the momentum encoder's forward on training batches
    ema_buffers: bool = False  # EMA of the BN buffers too (false: parameters only)
    camera_proxies: bool = False  # add CAP's camera-aware proxy losses (cc and dmi)
    camera_intra_weight: float = 1.0  # weight of the intra-camera loss (CAP: 1)
    camera_inter_weight: float = 0.5  # weight of the inter-camera loss (CAP: 0.5, O2CAP: 1)
    camera_hard_negatives: int = 50  # hard negative proxies of the inter-camera loss (CAP/O2CAP bg_knn)
    camera_temperature: float = 0.07  # of the camera losses (CAP inv_beta, O2CAP temp)
    camera_momentum: float = 0.2  # weight of the old value in camera proxy updates (CAP inv_alpha)
    single_camera_clusters: Literal["global", "own_camera"] = "global"  # own_camera: objectives/camera_local.py


@dataclass
class TrainConfig:
    """Optimisation and the epoch loop."""

    epochs: int = 50
    iters: int = 200
    batch_size: int = 256  # P*K
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20
    gamma: float = 0.1
    seed: int = 1
    eval_every: int = 10
    schedule: Literal["single", "two_stage"] = "single"
    stage1_epochs: int = 40  # two_stage: DCP-only epochs before DCP+MIP+EMA
    stage2_init: Literal["best", "last"] = "best"  # two_stage: weights stage 2 starts from
    amp: bool = True  # on CUDA only
    amp_dtype: Literal["bf16", "fp16"] = "bf16"  # bf16 falls back to fp16 + GradScaler without bf16 support
    amp_extract: bool = False  # autocast also for feature extraction (pseudo-labels, evaluation)
    deterministic: bool = False
    max_empty_epochs: int = 3  # stop after this many consecutive epochs with < 2 clusters
    extract_batch_size: int = 128
    save_pseudo_labels: bool = False  # write each epoch's labels to <run>/pseudo_labels/epoch_NNN.npy


@dataclass
class Config:
    """A whole run. ``output_dir`` is the run folder itself."""

    method: str = "dmi"  # a registered objective: cc | dmi | ...
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    output_dir: str = "runs/demo"
    plugins: list[str] = field(default_factory=list)  # modules (or .py files) imported before any lookup
    objective_options: dict[str, Any] = field(default_factory=dict)  # a plug-in objective's own settings
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
