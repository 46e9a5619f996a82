"""Two torchrun "nodes" on one machine (c10d rendezvous, gloo) train ``smoke`` like one process.

Node 1 gets its own data folder (it generates the synthetic set locally, as a node without a
shared filesystem would) and an output_dir that cannot be created even by root (its parent is a
regular file): only global rank 0 writes the run folder.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

LABEL_FIELDS = ("num_clusters", "num_outliers", "nmi", "ari", "pair_precision", "pair_recall")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(data_root, output_dir):
    # per-process batch 16 / 2 = 8 images = the single process's ghost BN group; frozen weights
    return [f"data.root={data_root}", f"output_dir={output_dir}", "train.epochs=2", "train.batch_size=16",
            "model.bn_group_size=8", "train.lr=1e-12", "train.eval_every=100", "train.save_pseudo_labels=true"]


def train_command():
    return ["-m", "dmireid", "train", "--config", "smoke"]


def metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: json.loads(line)[k] for k in LABEL_FIELDS} for line in lines]


def finish(procs, timeout):
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


@pytest.mark.slow
def test_two_nodes_train_smoke_like_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    single_run = tmp_path / "single"
    single = subprocess.run([sys.executable, *train_command(), *settings(tmp_path / "data0", single_run)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    node0_run = tmp_path / "node0" / "run"
    blocker = tmp_path / "node1" / "not-a-folder"
    blocker.parent.mkdir()
    node0_run.parent.mkdir()
    blocker.write_text("a regular file: mkdir below it fails, even for root\n")
    node1_run = blocker / "run"
    port = free_port()
    procs = []
    for node, (data_root, run_dir) in enumerate([(tmp_path / "data0", node0_run), (tmp_path / "data1", node1_run)]):
        # c10d assigns node ranks by sorted (address, pid), not by --node_rank: distinct loopback
        # addresses make node 0 global rank 0 whatever the start order
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node}",
                    "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                    "--rdzv_id=multinode-test", f"--local_addr=127.0.0.{node + 1}", "--max_restarts=0"]
        procs.append(subprocess.Popen([*launcher, *train_command(), *settings(data_root, run_dir)],
                                      cwd=tmp_path / f"node{node}", env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = finish(procs, timeout=400)
    for node, (proc, (_, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"node {node}:\n{err[-3000:]}"

    # only node 0 wrote a run folder; node 1's path still cannot exist; nothing stray elsewhere
    assert (node0_run / "last.pt").is_file() and (node0_run / "metrics.jsonl").is_file()
    assert blocker.is_file() and not node1_run.exists()
    assert sorted(p.name for p in (tmp_path / "node1").iterdir()) == ["not-a-folder"]
    assert sorted(p.name for p in (tmp_path / "node0").iterdir()) == ["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data0", "data1", "node0", "node1", "single"]

    log = (node0_run / "train.log").read_text()
    assert "world size 2" in log and "ranks=2" in log  # one training over two nodes, kNN split over both

    # the pseudo-labels (kNN split over the two nodes) equal the single process's, epoch by epoch
    for epoch in range(2):
        name = f"pseudo_labels/epoch_{epoch:03d}.npy"
        np.testing.assert_array_equal(np.load(node0_run / name), np.load(single_run / name))
    assert metrics(node0_run) == metrics(single_run)
    assert all(m["num_clusters"] >= 2 for m in metrics(single_run))
