"""benchmarks/harness.py: peak memory of a process tree, the machine line, tables, arguments, runner."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark
from dmireid.errors import DmireidError

harness = load_benchmark("harness")
MIB = 2**20

# a child that holds SIZE MiB of touched memory for HOLD seconds, with a child of CHILD MiB of its own
HOLDER = """
import os, subprocess, sys, time
size, hold, child = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
proc = subprocess.Popen([sys.executable, "-c", os.environ["HOLDER"], str(child), str(hold), "0"]) if child else None
block = b"\\x01" * (size * 2**20)
time.sleep(hold)
if proc:
    proc.wait()
"""
ENV = {**os.environ, "HOLDER": HOLDER}


def holder(size_mib: int, hold: float = 0.0, child_mib: int = 0) -> list[str]:
    return [sys.executable, "-c", HOLDER, str(size_mib), str(hold), str(child_mib)]


def test_peak_of_a_child_that_allocates_a_known_amount():
    empty = harness.run_process(holder(0, 0.5), env=ENV, interval=0.05)
    full = harness.run_process(holder(300, 0.5), env=ENV, interval=0.05)
    assert empty.returncode == 0 and full.returncode == 0, full.stderr
    grown = (full.peak_rss_bytes - empty.peak_rss_bytes) / MIB
    assert 290 <= grown <= 330, grown  # 300 MiB of bytes, the interpreter's own share differs by a few MiB


def test_peak_of_a_process_tree_sums_a_parent_and_its_child_alive_together():
    alone = harness.run_process(holder(0, 0.5), env=ENV, interval=0.05)
    tree = harness.run_process(holder(200, 1.5, 150), env=ENV, interval=0.05)  # 200 MiB + 150 MiB in its child
    assert tree.returncode == 0, tree.stderr
    grown = (tree.peak_rss_bytes - alone.peak_rss_bytes) / MIB  # one more interpreter: a few MiB
    assert 345 <= grown <= 350 + alone.peak_rss_bytes / MIB + 30, grown  # more than either process alone


def test_run_process_returns_exit_code_output_and_honours_the_timeout():
    done = harness.run_process([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); "
                                "sys.exit(3)"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    slow = harness.run_process([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow.returncode == -9 and slow.seconds < 10


def test_run_worker_parses_the_last_json_line_and_stops_on_failure():
    row = harness.run_worker([sys.executable, "-c", "print('noise'); print('{\"a\": 1}'); print('{\"a\": 2}')"])
    assert row["a"] == 2 and row["process_s"] > 0 and row["process_peak_rss_bytes"] > 0
    with pytest.raises(SystemExit, match="exit 1"):
        harness.run_worker([sys.executable, "-c", "raise ValueError('broken worker')"])


def test_peak_rss_of_a_block_in_this_process():
    """In a fresh process: a long-lived one may hand the block pages it already holds (no new peak)."""
    code = ("import harness\n"
            "before = harness.rss_bytes()\n"
            "with harness.PeakRSS() as peak:\n"
            "    block = b'\\x01' * (100 * 2**20)\n"
            "del block\n"
            "print(peak.bytes - before, int(peak.isolated))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(harness.__file__).parent, env={**os.environ, "PYTHONPATH": str(Path(harness.__file__).parent)})
    grown, isolated = (int(v) for v in out.stdout.split())
    assert grown >= 100 * MIB
    if isolated:  # the kernel reset the peak: it is this block's, not an earlier one's
        assert grown <= 130 * MIB


def test_markdown_table_of_known_rows_is_as_written_by_hand():
    rows = [{"n": 1000, "s": 0.12345, "name": "ours"}, {"n": 20000, "s": None, "name": "reference"}]
    columns = [harness.Column("name", "impl"), harness.Column("n", "N", ","), harness.Column("s", "wall s", ".3f"),
               harness.Column("n", "N/1000", lambda v: f"{v / 1000:.0f}k")]
    assert harness.markdown_table(rows, columns) == (
        "| impl | N | wall s | N/1000 |\n"
        "|---|---|---|---|\n"
        "| ours | 1,000 | 0.123 | 1k |\n"
        "| reference | 20,000 | – | 20k |")


def test_machine_line_by_hand_and_the_cpu_model_of_lscpu():
    info = {"cpu_model": "AMD EPYC", "cpus": 2, "load_average": [0.5, 0.25, 1.0], "threads": 1}
    assert harness.machine_line(info) == "machine: AMD EPYC, 2 CPUs, load 0.50 / 0.25 / 1.00, threads 1"
    assert harness.machine_line({**info, "threads": None}).endswith("threads default")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    names = [line.split(":", 1)[1].strip() for line in lscpu.stdout.splitlines() if line.startswith("Model name:")]
    if names:
        assert harness.cpu_model() == names[0]
    info = harness.machine()
    assert info["cpus"] >= 1 and len(info["load_average"]) == 3 and info["cpu_model"]


def test_common_arguments():
    parser = harness.arguments("Title line.\n\nMore text.", threads=0)
    args = parser.parse_args(["--quick", "--json", "out.json", "--threads", "2"])
    assert (args.quick, args.json, args.threads) == (True, "out.json", 2)
    assert parser.parse_args([]).threads == 0 and not parser.parse_args([]).quick
    assert parser.description == "Title line."


def test_main_prints_the_machine_line_above_each_table_and_writes_the_json(tmp_path, capsys):
    def body(args, report):
        report.table("sizes", [{"n": 1}, {"n": 2}], [harness.Column("n", "N")])
        report.add(ratio=0.5)

    path = tmp_path / "r.json"
    assert harness.main(body, harness.arguments("t"), ["--json", str(path), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "sizes" and lines[1].startswith("machine: ") and lines[1].endswith("threads 1")
    assert lines[2:] == ["", "| N |", "|---|", "| 1 |", "| 2 |"]
    saved = json.loads(path.read_text())
    assert saved["tables"][0]["rows"] == [{"n": 1}, {"n": 2}] and saved["ratio"] == 0.5
    assert saved["tables"][0]["machine"]["cpu_model"] == saved["machine"]["cpu_model"] and saved["wall_s"] >= 0


def test_main_turns_a_dmireid_error_into_one_line_and_status_2(capsys):
    def body(args, report):
        raise DmireidError("data.root /nowhere: no such folder")

    assert harness.main(body, harness.arguments("t"), []) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("error: data.root /nowhere: no such folder") and err.count("\n") == 1


def test_write_json_leaves_no_temporary_file(tmp_path):
    harness.write_json(tmp_path / "a" / "r.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": [1, 2]}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]
