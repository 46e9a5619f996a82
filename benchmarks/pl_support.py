"""Helpers of bench_pseudo_labels.py: the dense peer algorithm and per-phase memory probes."""

from __future__ import annotations

import resource


# ----------------------------------------------------------------------------------------------
# dense reference (the peers' algorithm, written for this benchmark)
def reference_jaccard(x, rank, k1, k2):
    """Dense N×N float32 k-reciprocal Jaccard distance with per-row Python loops (peer form)."""
    import numpy as np

    n = x.shape[0]
    half = int(np.around(k1 / 2))

    def reciprocal(i, k):
        fwd = rank[i, : k + 1]
        back = rank[fwd, : k + 1]
        return fwd[np.where(back == i)[0]]

    s_sets = [reciprocal(i, k1) for i in range(n)]
    c_sets = [reciprocal(i, half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        s = s_sets[i]
        expanded = s
        for j in s:
            c = c_sets[j]
            if len(np.intersect1d(c, s)) > 2 / 3 * len(c):
                expanded = np.append(expanded, c)
        expanded = np.unique(expanded)
        d = 2 - 2 * (x[expanded] @ x[i])
        w = np.exp(-(d - d.min()))
        v[i, expanded] = w / w.sum()
    del s_sets, c_sets
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = v[rank[i, :k2]].mean(axis=0)
        v = v_qe
        del v_qe
    inv = [np.where(v[:, col] != 0)[0] for col in range(n)]
    dist = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        acc = np.zeros(n, dtype=np.float32)
        cols = np.where(v[i] != 0)[0]
        for col in cols:
            rows = inv[col]
            acc[rows] += np.minimum(v[i, col], v[rows, col])
        dist[i] = 1 - acc / (2 - acc)
    del inv, v
    dist[dist < 0] = 0
    return dist


# ----------------------------------------------------------------------------------------------
# worker
def hwm_kib() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kib() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
