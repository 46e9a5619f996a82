"""dmireid.memory against per-sample loop forms of the peers' memories (issue 11, point 6).

The loop forms below are written from reading the peers' code (see docs/recipe_semantics.md), not
copied from it:

* ``PeerHybridMemory`` — Trangle12/DCMIP ``clustercontrast/models/cm.py``: ``CM_Hybrid`` with
  ``ClusterMemory.forward`` (mode ``CMhybrid``, and ``CMhard`` with ``model_name='encoder'``). One
  2C×d buffer: rows [0, C) are the first set (updated by the ``hard`` rule in the commented
  "Market1501" branch, by the ``sequential`` rule in the active "MSMT17" branch), rows [C, 2C) the
  ``mean`` set. Loss 0.5·(CE(rows C..2C) + max(0, CE(rows 0..C) − 0.2)), each CE over its own C
  logits. The memory is updated inside ``backward`` *after* the feature gradient was formed with
  the old rows.
* ``PeerInstanceMemory`` — DCMIP ``CM_Hard`` with ``ClusterMemory.forward(model_name='encoder_ema')``:
  a slot-major K·C×d buffer (row k·C + c = slot k of cluster c); the own cluster's logit is its
  least similar slot, every other cluster's its most similar slot; CE over C. In ``backward`` the
  K slots of every cluster in the batch are overwritten by ``np.random.choice(n, K, replace=n < 16)``
  of its batch features — the *online* features (``trainers.py ClusterContrastTrainer_PCLMP.train``
  passes ``features``, not ``features_ema``).
* ``peer_cc_update`` — alibaba/cluster-contrast-reid ``cm.py`` ``CM`` (sequential) and ``CM_Hard`` (hard).
* ``peer_ema_step`` — DCMIP ``ClusterContrastTrainer_PCLMP``: θ' forwards the batch in train mode
  (no grad, output unused), and after the optimiser step only its parameters are averaged.

Features enter as F.normalize of a leaf, so every gradient compared is tangential to the unit
sphere, as the model's L2 neck makes it.
"""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dmireid.memory import ClusterProxies, DiscrepantProxies, MomentumEncoder, MultiInstanceProxies

C, D, K = 7, 16, 16  # clusters, feature dim, MIP slots (the peer hard-codes n >= 16 for "no replacement")
TAU, MOM, MARGIN = 0.05, 0.1, 0.2
ATOL = 1e-5


def unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def batch_groups(x, y):
    """{cluster: [features in batch order]} in order of first appearance (the peer's defaultdict)."""
    groups = OrderedDict()
    for xi, yi in zip(x, y.tolist()):
        groups.setdefault(yi, []).append(xi)
    return groups


def sample_ce(logits, target):
    """−log softmax(logits)[target] for one sample (a 1-D list of scalar tensors)."""
    z = torch.stack(logits)
    return torch.logsumexp(z, 0) - z[target]


# ------------------------------------------------------------------------------- loop forms
class PeerHybridMemory:
    def __init__(self, centroids, first_rule):
        self.features = torch.cat([centroids, centroids]).clone()  # F.normalize(centers.repeat(2, 1))
        self.first_rule = first_rule

    def loss(self, x, y):
        """(loss, CE of the first set, CE of the mean set); gradient to x only."""
        x = F.normalize(x, dim=1)  # ClusterMemory.forward normalises its inputs again
        ce_first, ce_mean = [], []
        for i in range(len(y)):
            first = [x[i] @ self.features[c] / TAU for c in range(C)]
            second = [x[i] @ self.features[C + c] / TAU for c in range(C)]
            ce_first.append(sample_ce(first, int(y[i])))
            ce_mean.append(sample_ce(second, int(y[i])))
        ce_first, ce_mean = sum(ce_first) / len(y), sum(ce_mean) / len(y)
        return 0.5 * (ce_mean + torch.relu(ce_first - MARGIN)), ce_first, ce_mean

    @torch.no_grad()
    def update(self, x, y):
        x = F.normalize(x, dim=1)
        P = self.features
        for c, feats in batch_groups(x, y).items():
            if self.first_rule == "hard":
                sims = [float(f @ P[c]) for f in feats]  # against the row before its update
                hard = int(np.argmin(np.array(sims)))
                P[c] = P[c] * MOM + (1 - MOM) * feats[hard]
                P[c] /= P[c].norm()
            else:
                for f in feats:
                    P[c] = P[c] * MOM + (1 - MOM) * f
                    P[c] /= P[c].norm()
            mean = torch.stack(feats).mean(0)  # not re-normalised before the momentum step
            P[C + c] = P[C + c] * MOM + (1 - MOM) * mean
            P[C + c] /= P[C + c].norm()


class PeerInstanceMemory:
    def __init__(self, instances):  # C×K×d -> slot-major K·C×d
        self.features = torch.zeros(K * C, D)
        for c in range(C):
            for k in range(K):
                self.features[k * C + c] = instances[c, k]

    def slots(self, c):
        return [k * C + c for k in range(K)]

    def loss(self, x, y):
        x = F.normalize(x, dim=1)
        losses = []
        for i in range(len(y)):
            logits = []
            for c in range(C):
                s = self.features[self.slots(c)] @ x[i] / TAU  # K similarities
                logits.append(s.min() if c == int(y[i]) else s.max())
            losses.append(sample_ce(logits, int(y[i])))
        return sum(losses) / len(y)

    @torch.no_grad()
    def replace(self, x, y, rng):
        x = F.normalize(x, dim=1)
        for c, feats in batch_groups(x, y).items():
            ids = rng.choice(len(feats), K, replace=len(feats) < 16)
            self.features[self.slots(c)] = torch.stack(feats)[ids]

    def as_ckd(self):
        return self.features.view(K, C, D).transpose(0, 1)


def assert_same_slot_multisets(ours, peer):
    """Per cluster, the same K slot vectors up to order (the MIP loss is order-invariant)."""
    for c in range(C):
        a, b = ours[c], peer[c]
        torch.testing.assert_close(a[a[:, 0].argsort()], b[b[:, 0].argsort()], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------- batches
def block_batch(step, clusters, n_per=K, shuffle=False):
    """n_per consecutive samples per cluster (the samplers' layout), optionally shuffled."""
    y = torch.tensor(clusters).repeat_interleave(n_per)
    if shuffle:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(100 + step))]
    return torch.randn(len(y), D, generator=torch.Generator().manual_seed(200 + step)), y


def singleton_batch(step):
    """Two 16-blocks and a one-image cluster (the peer's sampler yields 1 index for it)."""
    z, y = block_batch(step, [4, 1])
    z1 = torch.randn(1, D, generator=torch.Generator().manual_seed(300 + step))
    return torch.cat([z, z1]), torch.cat([y, torch.tensor([6])])


def under_margin_batch(step, first_set, clusters=(0, 3, 5)):
    """Features next to their first-set proxies: the first set's CE falls under the margin."""
    y = torch.tensor(clusters).repeat_interleave(K)
    noise = torch.randn(len(y), D, generator=torch.Generator().manual_seed(400 + step))
    return first_set[y] + 0.02 * noise, y


def run_steps(first_rule, steps):
    """Feed the same batches to ours and to the loop forms; compare after every step."""
    centroids = unit(C, D, seed=1)
    instances = unit(C, K, D, seed=2)
    dcp = DiscrepantProxies(centroids, updates=(first_rule, "mean"), momentum=MOM, temperature=TAU,
                            margins=(MARGIN, 0.0))
    mip = MultiInstanceProxies(instances, temperature=TAU)
    peer_dcp, peer_mip = PeerHybridMemory(centroids, first_rule), PeerInstanceMemory(instances)
    rng, gen = np.random.RandomState(0), torch.Generator().manual_seed(0)
    first_ce = []
    for step, make in enumerate(steps):
        z, y = make(step, dcp.sets[0].proxies.clone())
        ours_z, peer_z = z.clone().requires_grad_(True), z.clone().requires_grad_(True)

        f = F.normalize(ours_z, dim=1)
        ce_first = dcp.loss_terms(f, y)[0]
        loss_dcp, loss_mip = dcp.loss(f, y), mip.loss(f, y)
        (loss_dcp + loss_mip).backward()
        dcp.update(f.detach(), y)
        mip.replace(f.detach(), y, gen)

        g = F.normalize(peer_z, dim=1)
        peer_dcp_loss, peer_ce_first, _ = peer_dcp.loss(g, y)
        peer_mip_loss = peer_mip.loss(g, y)
        (peer_dcp_loss + peer_mip_loss).backward()
        peer_dcp.update(g.detach(), y)
        peer_mip.replace(g.detach(), y, rng)

        close = dict(atol=ATOL, rtol=0)
        torch.testing.assert_close(ce_first, peer_ce_first.detach(), **close)
        torch.testing.assert_close(loss_dcp, peer_dcp_loss.detach(), **close)
        torch.testing.assert_close(loss_mip, peer_mip_loss.detach(), **close)
        torch.testing.assert_close(ours_z.grad, peer_z.grad, **close)
        torch.testing.assert_close(dcp.sets[0].proxies, peer_dcp.features[:C], **close)
        torch.testing.assert_close(dcp.sets[1].proxies, peer_dcp.features[C:], **close)
        assert_same_slot_multisets(mip.instances, peer_mip.as_ckd())
        first_ce.append(float(ce_first.detach()))
    return first_ce


STEPS = [
    lambda step, _: block_batch(step, [0, 2, 5]),
    lambda step, _: block_batch(step, [1, 2, 6], shuffle=True),
    lambda step, first_set: under_margin_batch(step, first_set),
    lambda step, _: singleton_batch(step),
    lambda step, _: block_batch(step, [3, 0, 4], shuffle=True),
]


@pytest.mark.parametrize("first_rule", ["hard", "sequential"])  # the peer's Market1501 / MSMT17 branch
def test_dcp_and_mip_match_the_peer_loop_over_several_steps(first_rule):
    first_ce = run_steps(first_rule, STEPS)
    assert first_ce[2] < MARGIN  # the hinge is off for the first set in that batch ...
    assert all(ce > MARGIN for i, ce in enumerate(first_ce) if i != 2)  # ... and on elsewhere


def test_under_margin_batch_gets_gradient_from_the_mean_set_only():
    centroids = unit(C, D, seed=1)
    dcp = DiscrepantProxies(centroids, updates=("hard", "mean"), margins=(MARGIN, 0.0))
    dcp.update(F.normalize(block_batch(0, [0, 3, 5])[0], dim=1), block_batch(0, [0, 3, 5])[1])
    z, y = under_margin_batch(0, dcp.sets[0].proxies)
    z.requires_grad_(True)
    f = F.normalize(z, dim=1)
    ce_first, ce_mean = dcp.loss_terms(f, y)
    assert float(ce_first.detach()) < MARGIN
    (grad,) = torch.autograd.grad(dcp.loss(f, y), z, retain_graph=True)
    (expected,) = torch.autograd.grad(0.5 * ce_mean, z)
    torch.testing.assert_close(grad, expected, atol=1e-7, rtol=0)
    radial = (grad * F.normalize(z, dim=1)).sum(1)  # tangential: no component along f / z
    assert radial.abs().max() < 1e-6


# ------------------------------------------------------------------------------- Cluster Contrast
def peer_cc_update(P, x, y, rule):
    """CC's CM (sequential, per sample in batch order) and CM_Hard (per cluster, least similar)."""
    P = P.clone()
    x = F.normalize(x, dim=1)
    if rule == "sequential":
        for xi, yi in zip(x, y.tolist()):
            P[yi] = MOM * P[yi] + (1.0 - MOM) * xi
            P[yi] /= P[yi].norm()
        return P
    for c, feats in batch_groups(x, y).items():
        hard = int(np.argmin(np.array([float(f @ P[c]) for f in feats])))
        P[c] = P[c] * MOM + (1 - MOM) * feats[hard]
        P[c] /= P[c].norm()
    return P


def peer_cc_loss(P, x, y):
    x = F.normalize(x, dim=1)
    return sum(sample_ce([x[i] @ P[c] / TAU for c in range(C)], int(y[i])) for i in range(len(y))) / len(y)


@pytest.mark.parametrize("rule", ["sequential", "hard"])
def test_cluster_proxies_match_cluster_contrast_over_several_steps(rule):
    centroids = unit(C, D, seed=5)
    ours, peer = ClusterProxies(centroids, update=rule, momentum=MOM, temperature=TAU), centroids.clone()
    for step in range(4):
        z, y = block_batch(step, [step % C, (step + 3) % C], n_per=5, shuffle=True)
        a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        f = F.normalize(a, dim=1)
        loss = ours.loss(f, y)
        loss.backward()
        ours.update(f.detach(), y)
        g = F.normalize(b, dim=1)
        peer_loss = peer_cc_loss(peer, g, y)
        peer_loss.backward()
        peer = peer_cc_update(peer, g.detach(), y, rule)
        torch.testing.assert_close(loss, peer_loss.detach(), atol=ATOL, rtol=0)
        torch.testing.assert_close(a.grad, b.grad, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.proxies, peer, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------- momentum encoder
def _net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4), nn.BatchNorm1d(4))


def peer_ema_step(ema_model, model, alpha):
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.data.mul_(alpha).add_(param.data, alpha=1 - alpha)


def test_momentum_encoder_parameters_only_matches_the_peer_over_several_steps():
    alpha = 0.9
    model = _net()
    ours = MomentumEncoder(model, alpha=alpha, buffers=False)
    peer = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for step in range(5):
        x = torch.randn(16, 6, generator=torch.Generator().manual_seed(step))
        out = model(x)
        ours.embed(x, mode="train")  # θ' forwards the same batch in train mode (output unused)
        peer.train()
        with torch.no_grad():
            peer(x)
        optimizer.zero_grad()
        out.pow(2).sum().backward()
        optimizer.step()
        ours.update(model)
        peer_ema_step(peer, model, alpha)
        mine, theirs = ours.module.state_dict(), peer.state_dict()
        for key in theirs:
            if theirs[key].is_floating_point():
                torch.testing.assert_close(mine[key], theirs[key], atol=1e-6, rtol=1e-6)
            else:
                assert torch.equal(mine[key], theirs[key]), key
    # θ' counts only its own forwards; its running statistics are not θ's
    assert int(ours.module.state_dict()["1.num_batches_tracked"]) == 5
    assert not torch.allclose(ours.module[1].running_mean, model[1].running_mean, atol=1e-3)
