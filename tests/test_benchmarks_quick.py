"""Every ``benchmarks/bench_*.py --quick`` (and gpu_check's quick form on the CPU) runs to the end,
so a benchmark that no longer matches the code fails CI instead of waiting for its next user.

Each runs as a user runs it: a subprocess, from a scratch working directory, with no PYTHONPATH
(the harness puts this checkout first on the path) and one thread. A benchmark whose data is
absent is skipped, saying why (bench_real needs the research images in ../shared).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL = SHARED / "data" / "cuhk03_pair1"
BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py")) + ["gpu_check.py"]
NEEDS = {"bench_real.py": (REAL.exists(), f"the real images are not at {REAL} (research-only, outside the repository)")}
WEIGHTS = SHARED / "weights" / "mobilenetv2_100_imagenet.pth"
NEEDS["bench_cold_start.py"] = (REAL.exists() and WEIGHTS.exists(),
                                f"the real images ({REAL}) or the ImageNet weights ({WEIGHTS}) are absent")
NEEDS.update({name: (importlib.util.find_spec("faiss") is not None, "faiss is not installed (the [faiss] extra)")
              for name in ("bench_index.py", "bench_pseudo_labels.py")})
EXTRA = {"bench_real.py": ["--out", "{tmp}/bench_real"]}


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS)
def test_quick_form_runs(script, tmp_path):
    needed = NEEDS.get(script)
    if needed and not needed[0]:
        pytest.skip(needed[1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    extra = [a.format(tmp=tmp_path) for a in EXTRA.get(script, [])]
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--threads", "1", *extra]
    if script == "gpu_check.py":  # its own options: --quick is --tiny --device cpu; no --threads
        command = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{script} --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "machine: " in done.stdout or "machine  " in done.stdout  # the machine line beside the tables
