"""What every benchmark shares: clocks, peak memory, the machine line, tables, JSON, arguments.

    import harness                       # first (before torch), a sibling: python benchmarks/bench_x.py

    def body(args, report):
        with harness.Timer() as t:
            ...
        report.table("what was measured", [{"n": 1000, "s": t.seconds}],
                     [harness.Column("n", "N"), harness.Column("s", "wall s", ".3f")])

    if __name__ == "__main__":
        sys.exit(harness.main(body, harness.arguments(__doc__)))

Importing this module puts the checkout that holds it first on ``sys.path``, so a benchmark
measures this tree's ``dmireid`` from any working directory, with no PYTHONPATH (a GPU machine's
stock image). Every table is printed under the machine line (CPU model, load average, threads),
and ``--json PATH`` writes the tables' rows with that machine description. Peak memory is read
from the kernel: ``VmHWM`` of this process (resettable per phase), and for a subprocess the peak
of its whole process tree (:func:`run_process`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MIB = 2**20
GIB = 2**30
log = logging.getLogger("benchmarks")


# ----------------------------------------------------------------------------------------------- clocks
class Timer:
    """Wall and CPU seconds (this process's threads) of a ``with`` block; ``sync()`` runs at both
    ends (pass :func:`device_sync` of a CUDA device so queued kernels are counted)."""

    def __init__(self, sync: Callable[[], None] | None = None):
        self.sync = sync or (lambda: None)
        self.seconds = self.cpu_seconds = 0.0

    def __enter__(self) -> "Timer":
        self.sync()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.sync()
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu


def device_sync(device) -> Callable[[], None]:
    """A ``sync`` for :class:`Timer`: ``torch.cuda.synchronize(device)`` on CUDA, nothing elsewhere."""
    if getattr(device, "type", str(device)) != "cuda":
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1,
                   sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    """``(median wall seconds of repeats calls, the last result)`` after ``warmup`` untimed calls."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        with Timer(sync) as t:
            result = fn()
        times.append(t.seconds)
    return statistics.median(times), result


# ----------------------------------------------------------------------------------------------- memory
def _status_kib(field_name: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int:
    """Resident set size of this process now (VmRSS)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM; since the last :func:`reset_peak_rss`)."""
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_rss() -> bool:
    """Start this process's peak anew (``/proc/self/clear_refs`` 5); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident bytes of this process during a ``with`` block (``.bytes``); ``.isolated`` is
    False where the peak could not be reset, so ``.bytes`` is the process's peak so far."""

    def __enter__(self) -> "PeakRSS":
        self.isolated = reset_peak_rss()
        self.bytes = 0
        return self

    def __exit__(self, *exc) -> None:
        self.bytes = peak_rss_bytes()


def descendants(pid: int) -> list[int]:
    """Process ids of ``pid``'s children, grandchildren, ... (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def tree_memory(pid: int) -> tuple[int, dict[int, int]]:
    """``(summed resident bytes of pid and its descendants now, {pid: its own peak bytes (VmHWM)})``."""
    pids = [pid, *descendants(pid)]
    rss = 1024 * sum(_status_kib("VmRSS", p) or 0 for p in pids)
    return rss, {p: 1024 * (_status_kib("VmHWM", p) or 0) for p in pids}


@dataclass
class Finished:
    """A finished subprocess: exit code, output, wall seconds and the peak RSS of its process tree."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_bytes: int  # max(the largest single process's own peak, the summed RSS of the tree)


def run_process(command: list[str], *, env: dict | None = None, cwd: str | Path | None = None,
                timeout: float | None = None, capture_stderr: bool = True, interval: float = 0.1) -> Finished:
    """Run ``command``; the peak memory of its process tree, sampled every ``interval`` s: the
    largest single process's own peak (its kernel high-water mark, VmHWM, exact up to its last
    sample) or the summed RSS of the process and its live descendants, whichever is larger.
    (``wait4``'s ``ru_maxrss`` is not used: Linux counts in it the parent's size at the fork.)"""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err if capture_stderr else None,
                                start_new_session=True)
        summed, own = 0, {}
        while True:
            rss, peaks = tree_memory(proc.pid)
            summed = max(summed, rss)
            own.update({p: max(b, own.get(p, 0)) for p, b in peaks.items()})
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(interval)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Finished(proc.returncode, out.read(), err.read() if capture_stderr else "", seconds,
                        max(summed, *own.values(), 0))


def run_worker(command: list[str], **kwargs) -> dict:
    """Run a worker that prints one JSON object as its last ``{`` line; that object plus
    ``process_s`` and ``process_peak_rss_bytes`` (its tree's). A failing worker stops the
    benchmark with the end of its stderr."""
    done = run_process(command, **kwargs)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker {' '.join(command[1:4])} ... failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "process_s": done.seconds, "process_peak_rss_bytes": done.peak_rss_bytes}


# ----------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's model name (``lscpu``, else /proc/cpuinfo, else the platform's word)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
        for line in text.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages."""
    return os.getloadavg()


def torch_threads(default: int | None = None) -> int | None:
    """torch's intra-op threads when torch is imported, else ``default``."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else default


def machine(threads: int | None = None) -> dict:
    """CPU model, CPU count, load average and threads (torch's, when imported) now."""
    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "load_average": list(load_average()),
            "threads": torch_threads(threads), "python": platform.python_version()}


def machine_line(info: dict) -> str:
    """``machine: MODEL, N CPUs, load a / b / c, threads T`` from :func:`machine`'s dict."""
    load = " / ".join(f"{v:.2f}" for v in info["load_average"])
    return (f"machine: {info['cpu_model']}, {info['cpus']} CPUs, load {load}, "
            f"threads {info['threads'] if info['threads'] is not None else 'default'}")


# ----------------------------------------------------------------------------------------------- output
@dataclass
class Column:
    """One table column: the row key, its header and a format spec (or a function of the value)."""

    key: str
    header: str
    spec: str | Callable[[Any], str] = ""


def cell(value: Any, spec: str | Callable[[Any], str] = "") -> str:
    """``value`` formatted for a table; None is ``–``."""
    if value is None:
        return "–"
    return spec(value) if callable(spec) else format(value, spec)


def markdown_table(rows: list[dict], columns: list[Column]) -> str:
    """A GitHub markdown table: one header line, one ``|---|`` line, one line per row."""
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c.key), c.spec) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: Any) -> None:
    """``payload`` as indented JSON at ``path`` (written aside, then renamed: never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(path)


@dataclass
class Report:
    """The tables a benchmark prints (each under the machine line) and the JSON it saves."""

    name: str
    args: argparse.Namespace | None = None
    tables: list[dict] = field(default_factory=list)
    values: dict = field(default_factory=dict)

    def table(self, title: str, rows: list[dict], columns: list[Column], threads: int | None = None) -> str:
        """Print ``title``, the machine line and the markdown table of ``rows``; keep them for the JSON."""
        info = machine(threads if threads is not None else getattr(self.args, "threads", None))
        text = "\n".join([f"\n{title}", machine_line(info), "", markdown_table(rows, columns)])
        print(text, flush=True)
        self.tables.append({"title": title, "machine": info, "rows": rows})
        return text

    def add(self, **values: Any) -> None:
        """More values for the JSON (ratios, settings, notes)."""
        self.values.update(values)

    def payload(self) -> dict:
        return {"benchmark": self.name, "argv": sys.argv[1:], "machine": machine(getattr(self.args, "threads", None)),
                "tables": self.tables, **self.values}

    def save(self, path: str | Path | None = None) -> None:
        """Write :meth:`payload` to ``path`` (default ``--json``); nothing when neither is given."""
        path = path or getattr(self.args, "json", None)
        if path:
            write_json(path, self.payload())


# ----------------------------------------------------------------------------------------------- arguments, runner
def arguments(doc: str | None, *, threads: int | None = 1, quick: str = "small sizes, seconds (what CI runs)",
              json_path: bool = True) -> argparse.ArgumentParser:
    """A parser with the common options: ``--quick``, ``--json PATH``, ``--threads N``."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n\n")[0],
                                     epilog="\n\n".join((doc or "").strip().split("\n\n")[1:2]) or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    if json_path:
        parser.add_argument("--json", help="also write the tables' rows and the machine here")
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"torch / OpenMP threads (default {threads if threads else 'torch default'})")
    return parser


def set_threads(threads: int | None) -> None:
    """``threads`` torch threads (and OMP_NUM_THREADS for subprocesses); nothing for 0 / None."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def main(body: Callable[[argparse.Namespace, Report], Any], parser: argparse.ArgumentParser,
         argv: list[str] | None = None) -> int:
    """Parse ``argv``, set the threads, run ``body(args, report)``, save ``--json``; 0 on success,
    2 (one line on stderr) on a :class:`~dmireid.errors.DmireidError`."""
    from dmireid.errors import DmireidError

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    set_threads(getattr(args, "threads", None))
    report = Report(parser.prog, args)
    try:
        with Timer() as clock:
            code = body(args, report)
    except DmireidError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    report.add(wall_s=clock.seconds)
    report.save()
    return int(code or 0)
