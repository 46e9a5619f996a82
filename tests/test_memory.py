"""dmireid.memory against naive per-sample loops written here."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dmireid.errors import DmireidError
from dmireid.memory import (
    ClusterProxies,
    DiscrepantProxies,
    MomentumEncoder,
    MultiInstanceProxies,
    cluster_centroids,
)

D = 32
C = 9
TAU = 0.05
MOM = 0.1


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def uneven_batch(seed=0, n=40):
    """Shuffled labels with uneven counts, clusters missing, repeated clusters, one -1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0] * 7 + [2] * 1 + [3] * 12 + [5] * 4 + [8] * 15 + [-1], dtype=torch.long)[:n]
    y = y[torch.randperm(len(y), generator=g)]
    return unit(len(y), D, seed=seed + 1), y


def kblock_batch(seed=0, p=4, k=4):
    g = torch.Generator().manual_seed(seed)
    clusters = torch.randperm(C, generator=g)[:p]
    y = clusters.repeat_interleave(k)
    return unit(len(y), D, seed=seed + 1), y


# ------------------------------------------------------------------------------- naive loops
def naive_centroids(f, y):
    num = int(y.max()) + 1
    out = torch.zeros(num, f.shape[1])
    for c in range(num):
        members = [f[i] for i in range(len(y)) if y[i] == c]
        if members:
            out[c] = F.normalize(torch.stack(members).mean(0), dim=0)
    return out


def naive_update(P, f, y, rule, m=MOM):
    P = P.clone()
    if rule == "sequential":
        for i in range(len(y)):
            c = int(y[i])
            if c >= 0:
                P[c] = F.normalize(m * P[c] + (1 - m) * f[i], dim=0)
        return P
    for c in sorted(set(y.tolist()) - {-1}):
        idx = [i for i in range(len(y)) if y[i] == c]
        if rule == "hard":
            sims = torch.stack([f[i] @ P[c] for i in idx])
            x = f[idx[int(torch.argmin(sims))]]
        else:
            x = torch.stack([f[i] for i in idx]).mean(0)
        P[c] = F.normalize(m * P[c] + (1 - m) * x, dim=0)
    return P


def naive_mip_loss(Q, f, y, tau=TAU, topk=0):
    losses = []
    for i in range(len(y)):
        if y[i] < 0:
            continue
        logits = []
        for c in range(Q.shape[0]):
            s = torch.stack([f[i] @ Q[c, k] for k in range(Q.shape[1])]) / tau
            logits.append(s.min() if c == y[i] else s.max())
        pos = logits[int(y[i])]
        negs = [logits[c] for c in range(Q.shape[0]) if c != y[i]]
        if topk:
            negs = sorted(negs, key=float, reverse=True)[:topk]
        row = torch.stack([pos] + negs)
        losses.append(-torch.log_softmax(row, 0)[0])
    return torch.stack(losses).mean()


# ------------------------------------------------------------------------------- centroids
def test_cluster_centroids_vs_loop():
    f, y = uneven_batch()
    got = cluster_centroids(f, y)
    assert got.shape == (C, D) and got.dtype == torch.float32
    torch.testing.assert_close(got, naive_centroids(f, y))
    assert torch.equal(got[1], torch.zeros(D))  # no member
    torch.testing.assert_close(cluster_centroids(f, y.numpy()), got)  # numpy labels
    assert cluster_centroids(f, -torch.ones(len(y), dtype=torch.long)).shape == (0, D)


# ------------------------------------------------------------------------------- ClusterProxies
@pytest.mark.parametrize("rule", ["sequential", "hard", "mean"])
@pytest.mark.parametrize("batch", ["uneven", "kblock", "kblock_shuffled"])
def test_cluster_proxy_updates_vs_loop(rule, batch):
    P0 = unit(C, D, seed=10)
    memory = ClusterProxies(P0, update=rule, momentum=MOM, temperature=TAU)
    P = P0.clone()
    for step in range(3):  # several updates chain correctly
        if batch == "uneven":
            f, y = uneven_batch(seed=step)
        else:
            f, y = kblock_batch(seed=step)
            if batch == "kblock_shuffled":
                perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(step))
                f, y = f[perm], y[perm]
        memory.update(f, y)
        P = naive_update(P, f, y, rule)
        torch.testing.assert_close(memory.proxies, P, atol=1e-6, rtol=0)
    torch.testing.assert_close(memory.proxies.norm(dim=1), torch.ones(C))


def test_sequential_order_matters_and_is_exact():
    P0 = unit(C, D, seed=3)
    f, y = uneven_batch(seed=4)
    a = ClusterProxies(P0, "sequential")
    b = ClusterProxies(P0, "sequential")
    a.update(f, y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(9))
    b.update(f[perm], y[perm])
    assert not torch.allclose(a.proxies, b.proxies)  # different batch orders, different results
    torch.testing.assert_close(b.proxies, naive_update(P0, f[perm], y[perm], "sequential"), atol=1e-6, rtol=0)


def test_hard_uses_proxy_before_update_and_untouched_clusters():
    P0 = unit(C, D, seed=5)
    f, y = uneven_batch(seed=6)
    memory = ClusterProxies(P0, "hard")
    memory.update(f, y)
    absent = [c for c in range(C) if c not in set(y.tolist())]
    assert absent and torch.equal(memory.proxies[absent], P0[absent])


def test_cluster_proxies_loss_logits_and_gradients():
    P0 = unit(C, D, seed=7)
    f, y = uneven_batch(seed=8)
    memory = ClusterProxies(P0, temperature=TAU)
    f = f.clone().requires_grad_(True)
    logits = memory.logits(f)
    torch.testing.assert_close(logits, f @ P0.t() / TAU)
    loss = memory.loss(f, y)
    keep = y >= 0
    torch.testing.assert_close(loss, F.cross_entropy((f @ P0.t() / TAU)[keep], y[keep]))
    loss.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert not memory.proxies.requires_grad and memory.proxies.grad is None
    assert list(memory.parameters()) == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert memory.logits(f).dtype == torch.float32


def test_update_does_not_track_grad_and_rejects_bad_rule():
    memory = ClusterProxies(unit(C, D), "mean")
    f = unit(4, D).requires_grad_(True)
    memory.update(f, torch.tensor([0, 0, 1, 2]))
    assert memory.proxies.grad_fn is None and not memory.proxies.requires_grad
    with pytest.raises(DmireidError, match="median"):
        ClusterProxies(unit(C, D), "median")
    with pytest.raises(ValueError):
        memory.update(unit(2, D), torch.tensor([0, C]))


def test_empty_and_all_outlier_batches_are_noops():
    P0 = unit(C, D)
    for rule in ("sequential", "hard", "mean"):
        memory = ClusterProxies(P0, rule)
        memory.update(unit(3, D), torch.tensor([-1, -1, -1]))
        memory.update(unit(0, D), torch.zeros(0, dtype=torch.long))
        assert torch.equal(memory.proxies, P0)


# ------------------------------------------------------------------------------- DCP
def test_discrepant_proxies_sets_rules_and_updates():
    P0 = unit(C, D, seed=11)
    dcp = DiscrepantProxies(P0, updates=["hard", "mean", "sequential"], momentum=MOM, temperature=TAU)
    assert len(dcp.sets) == 3 and [s.rule for s in dcp.sets] == ["hard", "mean", "sequential"]
    for s in dcp.sets:
        assert torch.equal(s.proxies, P0)
    f, y = uneven_batch(seed=12)
    dcp.update(f, y)
    for s, rule in zip(dcp.sets, ["hard", "mean", "sequential"]):
        torch.testing.assert_close(s.proxies, naive_update(P0, f, y, rule), atol=1e-6, rtol=0)
    assert not torch.allclose(dcp.sets[0].proxies, dcp.sets[1].proxies)  # discrepant


def _ce(P, f, y):
    return F.cross_entropy(f @ P.t() / TAU, y)


@pytest.mark.parametrize("margins", [(0.0, 0.0), (0.2, 0.0), (100.0, 0.0), (0.0, 0.3), (0.2, 0.3)])
def test_dcp_loss_formula_by_hand(margins):
    f, y = kblock_batch(seed=13)
    dcp = DiscrepantProxies(unit(C, D, seed=14), momentum=MOM, temperature=TAU, margins=margins)
    assert dcp.margins == margins
    dcp.update(unit(len(y), D, seed=15), y)  # make the sets differ
    P_hard, P_mean = dcp.sets[0].proxies, dcp.sets[1].proxies
    ce_hard, ce_mean = _ce(P_hard, f, y), _ce(P_mean, f, y)
    m1, m2 = margins
    expected = 0.5 * (torch.clamp(ce_hard - m1, min=0) + torch.clamp(ce_mean - m2, min=0))
    f = f.clone().requires_grad_(True)
    loss = dcp.loss(f, y)
    torch.testing.assert_close(loss, expected)
    terms = dcp.loss_terms(f, y)
    torch.testing.assert_close(torch.stack(terms), torch.stack([ce_hard, ce_mean]))
    loss.backward()
    assert f.grad is not None
    assert all(not s.proxies.requires_grad for s in dcp.sets)


def test_dcp_margin_on_the_first_set_whatever_its_rule():
    """The peer's MSMT17 branch: sets [sequential, mean], margin 0.2 on the sequential set."""
    f, y = kblock_batch(seed=18)
    P0 = unit(C, D, seed=19)
    dcp = DiscrepantProxies(P0, updates=("sequential", "mean"), margins=(0.2, 0.0))
    dcp.update(unit(len(y), D, seed=20), y)
    ce_seq, ce_mean = _ce(dcp.sets[0].proxies, f, y), _ce(dcp.sets[1].proxies, f, y)
    torch.testing.assert_close(dcp.loss(f, y), 0.5 * (ce_mean + torch.clamp(ce_seq - 0.2, min=0)))
    assert "margins=[0.2, 0.0]" in repr(dcp)


def test_dcp_deprecated_margin_hinges_hard_sets_only():
    f, y = kblock_batch(seed=16)
    P0 = unit(C, D, seed=17)
    with pytest.warns(DeprecationWarning, match="margins"):
        dcp = DiscrepantProxies(P0, updates=("hard", "sequential", "hard"), margin=0.5)
    assert dcp.margins == (0.5, 0.0, 0.5)
    ce = _ce(P0, f, y)
    expected = (2 * torch.clamp(ce - 0.5, min=0) + ce) / 3
    torch.testing.assert_close(dcp.loss(f, y), expected)
    with pytest.warns(DeprecationWarning):
        plain = DiscrepantProxies(P0, updates=("sequential", "mean"), margin=0.5)  # no hard set: no hinge
    assert plain.margins == (0.0, 0.0)


def test_dcp_margins_zero_is_todays_loss_bit_for_bit():
    f, y = uneven_batch(seed=21)
    P0 = unit(C, D, seed=22)
    new = DiscrepantProxies(P0, margins=[0.0, 0.0])
    plain = DiscrepantProxies(P0, margins=None)
    old_formula = torch.stack([s.loss(f, y) for s in plain.sets]).mean()
    assert torch.equal(new.loss(f, y), old_formula) and torch.equal(plain.loss(f, y), old_formula)
    assert plain.margins == (0.0, 0.0) and DiscrepantProxies(P0).margins == (0.2, 0.0)  # memory.dcp_margins


@pytest.mark.parametrize("kwargs, match", [
    (dict(margins=(0.2,)), "1 value.*2 set"),
    (dict(margins=(0.2, 0.0, 0.0)), "3 value.*2 set"),
    (dict(margins=(0.2, -0.1)), ">= 0"),
    (dict(margins=(float("nan"), 0.0)), ">= 0"),
    (dict(margins=0.2), "list of numbers"),
    (dict(margins="0.2"), "list of numbers"),
    (dict(margins=(0.2, 0.0), margin=0.2), "not both"),
])
def test_dcp_margins_errors(kwargs, match):
    with pytest.raises(DmireidError, match=match) as info:
        DiscrepantProxies(unit(C, D), updates=("hard", "mean"), **kwargs)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------- MIP
@pytest.mark.parametrize("topk", [0, 3, 100])
def test_mip_loss_vs_loop(topk):
    K = 5
    Q = unit(C, K, D, seed=20)
    f, y = uneven_batch(seed=21)
    mip = MultiInstanceProxies(Q, temperature=TAU, negatives_topk=topk)
    f = f.clone().requires_grad_(True)
    loss = mip.loss(f, y)
    torch.testing.assert_close(loss, naive_mip_loss(Q, f.detach(), y, topk=topk if topk < C - 1 else 0))
    loss.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert not mip.instances.requires_grad and mip.instances.grad is None


def test_mip_logits_chunked_equal_unchunked(monkeypatch):
    import dmireid.memory.instances as inst

    Q = unit(C, 4, D, seed=22)
    f, y = uneven_batch(seed=23)
    mip = MultiInstanceProxies(Q)
    full = mip.logits(f, y)
    monkeypatch.setattr(inst, "_CHUNK_ELEMENTS", len(y) * 4 * 2)  # 2 clusters per chunk
    torch.testing.assert_close(mip.logits(f, y), full)
    s = torch.einsum("bd,ckd->bck", f, Q) / TAU
    expected = s.max(2).values
    keep = y >= 0
    expected[keep.nonzero().squeeze(1), y[keep]] = s.min(2).values[keep, y[keep]]
    torch.testing.assert_close(full, expected)


def _batch_features_of(f, y, c):
    return f[y == c]


@pytest.mark.parametrize("K", [4, 6, 2])
def test_mip_replace_semantics(K):
    Q0 = unit(C, K, D, seed=30)
    f, y = kblock_batch(seed=31, p=4, k=4)  # 4 per cluster: K=4 permutation, 6 repeats, 2 subset
    y = y.clone()
    y[-1] = -1  # last cluster has 3 samples (and an outlier)
    mip = MultiInstanceProxies(Q0)
    mip.replace(f, y, torch.Generator().manual_seed(0))
    present = set(y.tolist()) - {-1}
    for c in range(C):
        if c not in present:
            assert torch.equal(mip.instances[c], Q0[c])
            continue
        batch = _batch_features_of(f, y, c)
        n = len(batch)
        # which batch sample sits in each slot
        match = (mip.instances[c][:, None, :] == batch[None, :, :]).all(-1)  # K×n
        assert (match.sum(1) == 1).all()
        uses = match.sum(0)
        if n >= K:
            assert (uses <= 1).all() and uses.sum() == K
        else:
            assert (uses >= K // n).all() and (uses <= -(-K // n)).all()


def test_mip_replace_random_but_deterministic():
    K = 4
    Q0 = unit(C, K, D, seed=32)
    f, y = kblock_batch(seed=33)
    results = []
    for seed in (0, 0, 1):
        mip = MultiInstanceProxies(Q0)
        mip.replace(f, y, torch.Generator().manual_seed(seed))
        results.append(mip.instances.clone())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])
    # n == K: every batch sample of the cluster lands in exactly one slot
    for c in set(y.tolist()):
        torch.testing.assert_close(results[0][c].sum(0), _batch_features_of(f, y, c).sum(0))


def test_mip_sample_members_and_from_features():
    y = torch.tensor([2, 0, 0, -1, 1, 2, 2, 0, 1, 2])
    g = torch.Generator().manual_seed(0)
    members = MultiInstanceProxies.sample_members(y, 50, g)
    assert members.shape == (3, 50)
    for c in range(3):
        assert (y[members[c]] == c).all()
        assert set(members[c].tolist()) == set(torch.nonzero(y == c).squeeze(1).tolist())  # all drawn
    again = MultiInstanceProxies.sample_members(y.numpy(), 50, torch.Generator().manual_seed(0))
    assert torch.equal(members, again)
    f = unit(len(y), D, seed=40)
    mip = MultiInstanceProxies.from_features(f, y, 7, torch.Generator().manual_seed(1), temperature=0.1)
    assert mip.instances.shape == (3, 7, D) and mip.temperature == 0.1
    for c in range(3):
        match = (mip.instances[c][:, None, :] == f[y == c][None]).all(-1)
        assert (match.sum(1) == 1).all()
    with pytest.raises(DmireidError, match="cluster 1"):
        MultiInstanceProxies.sample_members(torch.tensor([0, 2, 2]), 3)


# ------------------------------------------------------------------------------- EMA
def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def test_momentum_encoder_update_by_hand():
    net = _small_net()
    ema = MomentumEncoder(net, alpha=0.9, buffers=True)
    assert ema.module is not net and not any(p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in net.parameters())
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    net.train()
    net(torch.randn(8, 6))  # BN running stats and num_batches_tracked change
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    ema.update(net)
    after = ema.module.state_dict()
    for key, src in net.state_dict().items():
        if src.is_floating_point():
            torch.testing.assert_close(after[key], 0.9 * before[key] + 0.1 * src)
        else:
            assert torch.equal(after[key], src), key
    assert int(after["1.num_batches_tracked"]) == 1
    assert not torch.equal(after["1.running_mean"], before["1.running_mean"])
    out = ema(torch.randn(2, 6))
    assert out.shape == (2, 3) and not out.requires_grad


def test_momentum_encoder_unwraps_dataparallel_and_alpha_edges():
    net = _small_net()
    wrapped = nn.DataParallel(net)
    ema = MomentumEncoder(wrapped, alpha=0.0)
    assert list(ema.state_dict())[0].startswith("module.0.")
    with torch.no_grad():
        net[0].weight.add_(1)
    ema.update(wrapped)
    assert torch.equal(ema.module[0].weight, net[0].weight)
    frozen = MomentumEncoder(net, alpha=1.0)
    w = frozen.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1)
    frozen.update(net)
    assert torch.equal(frozen.module[0].weight, w)


def test_momentum_encoder_parameters_only_leaves_buffers_to_its_own_forwards():
    net = _small_net()
    ema = MomentumEncoder(net, alpha=0.9, buffers=False)
    assert "buffers=False" in repr(ema)
    net.train()
    net(torch.randn(8, 6))  # θ's BN buffers move; θ''s must not follow them
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    ema.update(net)
    after = ema.module.state_dict()
    params = {name for name, _ in net.named_parameters()}
    for key, src in net.state_dict().items():
        if key in params:
            torch.testing.assert_close(after[key], 0.9 * before[key] + 0.1 * src)
        else:
            assert torch.equal(after[key], before[key]), key
    # its own train-mode forward moves its running statistics and its counter, eval does not
    x = torch.randn(8, 6)
    ema.embed(x, mode="eval")
    assert not ema.module.training and torch.equal(ema.module.state_dict()["1.running_mean"], before["1.running_mean"])
    out = ema.embed(x, mode="train")
    assert ema.module.training and not out.requires_grad
    h = ema.module[0](x)
    torch.testing.assert_close(ema.module.state_dict()["1.running_mean"],
                               0.9 * before["1.running_mean"] + 0.1 * h.mean(0))
    assert int(ema.module.state_dict()["1.num_batches_tracked"]) == 1
    with pytest.raises(DmireidError, match="memory.ema_forward"):
        ema.embed(x, mode="training")


# ------------------------------------------------------------------------------- state_dict
def _round_trip(module, fresh):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for (k1, v1), (k2, v2) in zip(module.state_dict().items(), fresh.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    return fresh


def test_state_dict_round_trips():
    f, y = uneven_batch(seed=50)
    cp = ClusterProxies(unit(C, D, seed=51))
    cp.update(f, y)
    assert list(cp.state_dict()) == ["proxies"]
    _round_trip(cp, ClusterProxies(unit(C, D, seed=52)))

    dcp = DiscrepantProxies(unit(C, D, seed=53))
    dcp.update(f, y)
    assert list(dcp.state_dict()) == ["sets.0.proxies", "sets.1.proxies"]
    _round_trip(dcp, DiscrepantProxies(unit(C, D, seed=54)))

    mip = MultiInstanceProxies(unit(C, 4, D, seed=55))
    mip.replace(f, y, torch.Generator().manual_seed(0))
    assert list(mip.state_dict()) == ["instances"]
    _round_trip(mip, MultiInstanceProxies(unit(C, 4, D, seed=56)))

    net = _small_net()
    ema = MomentumEncoder(net)
    net(torch.randn(4, 6))
    ema.update(net)
    other = MomentumEncoder(_small_net())
    _round_trip(ema, other)


def test_numpy_labels_accepted():
    f, y = uneven_batch(seed=60)
    a, b = ClusterProxies(unit(C, D), "sequential"), ClusterProxies(unit(C, D), "sequential")
    a.update(f, y)
    b.update(f, y.numpy())
    assert torch.equal(a.proxies, b.proxies)
    torch.testing.assert_close(a.loss(f, y), a.loss(f, np.asarray(y)))
