"""Camera-aware proxies (memory.camera_proxies) against per-camera, per-sample loops written here
after CAP's code (Terminator8758/CAP-master reid/loss/CamAwareMemory.py, reid/img_grouping.py),
and how they combine with CC and with DMI's discrepant and multi-instance proxies."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmireid import build
from dmireid.config import MemoryConfig
from dmireid.memory import CameraProxies, camera_centroids
from dmireid.objectives import ClusterContrast, DMI, ObjectiveContext

D, TAU, MOM = 16, 0.07, 0.2


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def epoch_data(seed=0):
    """40 images, 5 clusters over 3 cameras; cluster 3 is seen by camera 2 only; some outliers."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 1, 2, 4] * 8 + [3] * 5 + [-1] * 3)
    cameras = torch.randint(0, 3, (40,), generator=g)
    cameras[labels == 3] = 2
    cameras[:8] = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # clusters 0, 1, 2, 4 seen by cameras 0 and 1
    return unit(40, D, seed=seed + 1), labels, cameras


def loop_centroids(features, labels, cameras):
    """CAP img_grouping.py 69-83: per camera, per cluster present, the normalised mean."""
    out = {}
    for c in sorted(set(cameras.tolist())):
        for k in sorted(set(labels[cameras == c].tolist())):
            if k >= 0:
                rows = [i for i in range(len(labels)) if labels[i] == k and cameras[i] == c]
                out[(k, c)] = F.normalize(features[rows].mean(0), dim=0)
    return out


def loop_losses(f, y, cams, proxies: dict, tau, hard):
    """CAP loss_using_pseudo_percam_proxy (lines 85-114) as a loop: per camera of the batch, the
    mean intra-camera CE and the mean association loss (positives = every proxy of the cluster,
    negatives = the `hard` most similar proxies of other clusters), summed over cameras."""
    keys = list(proxies)
    bank = torch.stack([proxies[k] for k in keys])
    intra, inter = f.new_zeros(()), f.new_zeros(())
    for c in sorted(set(cams.tolist())):
        rows = [i for i in range(len(y)) if cams[i] == c and y[i] >= 0]
        if not rows:
            continue
        own = [j for j, (k, cam) in enumerate(keys) if cam == c]
        logits = f[rows] @ bank[own].T / tau
        targets = torch.tensor([own.index(keys.index((int(y[i]), c))) for i in rows])
        intra = intra + F.cross_entropy(logits, targets)
        total = f.new_zeros(())
        for i in rows:
            sims = f[i] @ bank.T
            pos = [j for j, (k, _) in enumerate(keys) if k == int(y[i])]
            others = [j for j, (k, _) in enumerate(keys) if k != int(y[i])]
            neg = sorted(others, key=lambda j: -float(sims[j].detach()))[:hard]
            inputs = torch.cat([sims[pos], sims[neg]]) / tau
            target = torch.zeros(len(inputs))
            target[:len(pos)] = 1.0 / len(pos)
            total = total - (F.log_softmax(inputs, 0) * target).sum()
        inter = inter + total / len(rows)
    return intra, inter


def loop_update(proxies: dict, f, y, cams, m):
    """CAP ExemplarMemory.backward (lines 28-30): each sample in batch order, then normalise."""
    out = {k: v.clone() for k, v in proxies.items()}
    for x, k, c in zip(f, y.tolist(), cams.tolist()):
        if k >= 0:
            new = m * out[(k, c)] + (1 - m) * x
            out[(k, c)] = new / new.norm()
    return out


def as_dict(memory: CameraProxies):
    return {(int(k), int(c)): p.clone() for k, c, p in zip(memory.proxy_cluster, memory.proxy_camera, memory.proxies)}


def batch(labels, cameras, rows, seed):
    return unit(len(rows), D, seed=seed), labels[rows], cameras[rows]


@pytest.mark.parametrize("hard", [50, 3, 0])
@pytest.mark.parametrize("case", ["mixed", "one_camera"])
def test_losses_gradients_and_update_match_the_loop(hard, case):
    features, labels, cameras = epoch_data()
    memory = CameraProxies.from_features(features, labels, cameras, momentum=MOM, temperature=TAU,
                                         hard_negatives=hard)
    reference = loop_centroids(features, labels, cameras)
    assert set(as_dict(memory)) == set(reference)  # cluster 3 has one proxy, (3, 2)
    for key, value in as_dict(memory).items():
        torch.testing.assert_close(value, reference[key], atol=1e-6, rtol=0)
    # a batch over several cameras with a cluster seen by one camera only, or a one-camera batch
    rows = [0, 4, 1, 5, 2, 6, 32, 33, 34, 9, 10, 11, 3, 7] if case == "mixed" else [0, 1, 2, 3, 16, 20]
    f0, y, cams = batch(labels, cameras, rows, seed=7)
    if case == "one_camera":
        cams = torch.zeros_like(cams)
    f = f0.clone().requires_grad_(True)
    intra, inter = memory.losses(f, y, cams)
    grad = torch.autograd.grad(intra + 0.5 * inter, f)[0]
    f_ref = f0.clone().requires_grad_(True)
    intra_ref, inter_ref = loop_losses(f_ref, y, cams, reference, TAU, hard)
    grad_ref = torch.autograd.grad(intra_ref + 0.5 * inter_ref, f_ref)[0]
    torch.testing.assert_close(intra, intra_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(inter, inter_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=0)
    memory.update(f0, y, cams)
    updated = loop_update(reference, f0, y, cams, MOM)
    for key, value in as_dict(memory).items():
        torch.testing.assert_close(value, updated[key], atol=1e-6, rtol=0)


def test_outliers_in_a_batch_are_ignored():
    features, labels, cameras = epoch_data(seed=3)
    memory = CameraProxies.from_features(features, labels, cameras, temperature=TAU)
    f, y, cams = batch(labels, cameras, [0, 4, 37, 38, 39], seed=5)  # the last three are outliers (-1)
    intra, inter = memory.losses(f, y, cams)
    intra_ref, inter_ref = loop_losses(f, y, cams, as_dict(memory), TAU, 50)
    assert torch.isfinite(intra) and torch.isfinite(inter)
    torch.testing.assert_close((intra, inter), (intra_ref, inter_ref), atol=1e-5, rtol=0)
    before = memory.proxies.clone()
    memory.update(f[2:], y[2:], cams[2:])  # only outliers: nothing moves
    assert torch.equal(before, memory.proxies)


def test_camera_centroids_order_and_state_dict_round_trip():
    features, labels, cameras = epoch_data()
    proxies, cluster, camera = camera_centroids(features, labels, cameras)
    keys = list(zip(cluster.tolist(), camera.tolist()))
    assert keys == sorted(keys) and (3, 2) in keys and not any(k == 3 and c != 2 for k, c in keys)
    memory = CameraProxies.from_features(features, labels, cameras)
    clone = CameraProxies.from_features(unit(40, D, seed=9), labels, cameras)
    clone.load_state_dict(memory.state_dict())
    assert torch.equal(clone.proxies, memory.proxies) and torch.equal(clone.table, memory.table)


def context(stage=2, camera_proxies=True, seed=0):
    features, labels, cameras = epoch_data(seed)
    return ObjectiveContext(features=features, labels=labels, cameras=cameras, epoch=0, stage=stage, seed=11,
                            device=torch.device("cpu"), embed_momentum=lambda rows: features[torch.as_tensor(rows)])


def settings(method, camera_proxies=True):
    """The method's own settings dataclass, as dmireid.build fills it from a ``memory`` section."""
    return build.objective_settings(method.settings_class, MemoryConfig(
        mip_instances=3, camera_proxies=camera_proxies, camera_intra_weight=0.7, camera_inter_weight=0.3,
        camera_hard_negatives=4))


@pytest.mark.parametrize("method, stage", [(DMI, 2), (DMI, 1), (ClusterContrast, 2)])
def test_camera_terms_add_to_the_method_loss_and_leave_its_memories_alone(method, stage):
    """loss(with) = loss(without) + w_intra·L_intra + w_inter·L_inter; the CC proxies, DCP sets and
    MIP instances receive exactly the same updates with and without the camera terms."""
    with_cam = method.build(context(stage), settings(method))
    without = method.build(context(stage), settings(method, camera_proxies=False))
    assert with_cam.needs_cameras and not without.needs_cameras
    _, labels, cameras = epoch_data()
    for step, rows in enumerate(([0, 4, 1, 5, 32, 33, 2, 6], [8, 9, 10, 11, 12, 13, 34, 35])):
        f, y, cams = batch(labels, cameras, rows, seed=20 + step)
        reference = as_dict(with_cam.camera_memory)
        loss, terms = with_cam.loss(f, y, cameras=cams)
        base, base_terms = without.loss(f, y)
        intra, inter = loop_losses(f, y, cams, reference, TAU, 4)
        torch.testing.assert_close(loss, base + 0.7 * intra + 0.3 * inter, atol=1e-5, rtol=0)
        torch.testing.assert_close(terms["loss_cam_intra"], intra, atol=1e-5, rtol=0)
        for key, value in base_terms.items():
            assert torch.equal(terms[key], value)  # DCP / MIP terms unchanged
        with_cam.update(f, f, y, cameras=cams)
        without.update(f, f, y)
        for key, value in as_dict(with_cam.camera_memory).items():
            torch.testing.assert_close(value, loop_update(reference, f, y, cams, 0.2)[key], atol=1e-6, rtol=0)
    own = {k: v for k, v in with_cam.state_dict().items() if not k.startswith("camera_memory.")}
    assert own.keys() == without.state_dict().keys()
    for key, value in without.state_dict().items():
        assert torch.equal(own[key], value), key


def test_options_off_build_no_camera_memory_and_old_plugins_are_called_without_cameras():
    from dmireid.objectives import Objective

    objective = DMI.build(context(), settings(DMI, camera_proxies=False))
    assert objective.camera_memory is None and not objective.needs_cameras
    assert Objective.needs_cameras is False  # a plug-in written before cameras: loss(f, y), update(f, fm, y)
    with pytest.raises(RuntimeError, match="cameras"):
        DMI.build(context(), settings(DMI)).loss(unit(2, D), torch.tensor([0, 1]))
