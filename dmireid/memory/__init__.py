"""Proxy memories, losses and the momentum encoder (spec §4).

    cluster_centroids(features N×d, labels N) -> C×d           # normalised means, -1 ignored
    ClusterProxies(centroids, update="sequential", momentum=0.1, temperature=0.05)
        .logits(f) -> B×C ; .loss(f, y) ; .update(f, y)
    DiscrepantProxies(centroids, updates=("hard", "mean"), momentum, temperature, margins=(0.2, 0.0))
        .loss(f, y) ; .loss_terms(f, y) ; .update(f, y) ; .sets ; .margins   # one margin per set
        (margin= is the deprecated keyword: that margin on every hard set)
    MultiInstanceProxies(instances C×K×d, temperature=0.05, negatives_topk=0)
        .logits(f, y) ; .loss(f, y) ; .replace(f_momentum, y, generator)
        .sample_members(labels, k, generator) ; .from_features(features, labels, k, generator)
    MomentumEncoder(model, alpha=0.999, buffers=False): .module ; .update(model) ; .embed(x, mode)
    CameraProxies.from_features(features, labels, cameras, momentum=0.2, temperature=0.07, hard_negatives=50)
        .losses(f, y, cameras) -> (intra, inter) ; .update(f, y, cameras)   # CAP, one proxy per (cluster, camera)
    camera_centroids(features, labels, cameras) -> (M×d, M clusters, M cameras)
        (buffers=False: parameters only, BN buffers follow the copy's own train-mode forwards)

Every default equals the ``memory`` config key's (tests/test_build.py compares them).

Every memory is an nn.Module whose state lives in buffers (state_dict round-trips exactly), with
no gradient; updates run under no_grad, vectorised (no per-sample loop or device sync).
"""

from .camera import CameraProxies, camera_centroids
from .ema import MomentumEncoder
from .instances import MultiInstanceProxies
from .proxies import UPDATE_RULES, ClusterProxies, DiscrepantProxies, cluster_centroids

__all__ = [
    "CameraProxies",
    "camera_centroids",
    "UPDATE_RULES",
    "ClusterProxies",
    "DiscrepantProxies",
    "MomentumEncoder",
    "MultiInstanceProxies",
    "cluster_centroids",
]
