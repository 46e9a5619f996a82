"""Load test of ``dmireid serve``: 8 loopback clients searching and adding for a fixed time against a
100k gallery; requests/s, p50 / p99 latency, errors; afterwards the index is checked whole.

    python benchmarks/bench_serve.py                       # 100k gallery, 8 clients, 30 s
    python benchmarks/bench_serve.py --quick               # 2k gallery, 4 clients, 8 s (CI)

The server is a real ``python -m dmireid serve`` process on 127.0.0.1 (a free port), over an index
whose model is a random-weight ResNet-18 at 64×32 (CPU) and whose gallery holds ``--gallery``
synthetic vectors (rows of fictitious paths; what a search costs does not depend on the pixels) plus
a few real images. Each client, on its own keep-alive connection, repeats: POST /search with a new
random PNG, and every ``--add-every``-th time POST /add of that upload. Bounded: ``--seconds`` and
``--max-requests`` per client; only 127.0.0.1. Afterwards (server stopped): faiss ids == SQLite ids,
equal vectors, and every add the server acknowledged (200, "added to the gallery") is in the index.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import harness  # noqa: I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before numpy / torch)
import numpy as np

REPO = harness.REPOSITORY


def make_index(folder: Path, gallery: int, seed: int = 0) -> Path:
    """A checkpoint and an exact index of a few real PNGs + ``gallery`` synthetic unit vectors."""
    import torch
    from PIL import Image

    from dmireid import build
    from dmireid.embedding.checkpoint import save_checkpoint
    from dmireid.config import load_config
    from dmireid.inference import GalleryIndex

    cfg = load_config("smoke", ["data.height=64", "data.width=32"])
    torch.manual_seed(seed)
    model = build.model(cfg, for_inference=True).eval()
    ckpt = folder / "last.pt"
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "model": model.state_dict(), "ema_model": None}, ckpt)
    rng = np.random.default_rng(seed)
    (folder / "real").mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray((rng.random((64, 32, 3)) * 255).astype(np.uint8)).save(folder / "real" / f"{i:04d}.png")
    index = GalleryIndex.build(ckpt, [folder / "real"], folder / "index", device="cpu")
    dim = index.manifest["dim"]
    for start in range(0, gallery, 50_000):
        count = min(50_000, gallery - start)
        vectors = rng.standard_normal((count, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [(f"/synthetic/{start + i:07d}.png", uuid.uuid4().hex, None, "synthetic", "2026-01-01T00:00:00+00:00")
                for i in range(count)]
        index.store.change(rows, vectors)
    index.store.meta.close()
    return folder / "index"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "dmireid", "serve", str(index_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped: {proc.stderr.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not answer within 120 s")


def multipart(fields: dict[str, str], file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode())
    if file:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{file[0]}\"\r\n"
                  f"Content-Type: image/png\r\n\r\n".encode() + file[1] + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def random_png(rng: np.random.Generator) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((rng.random((64, 32, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def client(port: int, seed: int, stop_at: float, max_requests: int, add_every: int, log: list, acked: list) -> None:
    """One keep-alive connection: search with a new image, sometimes add it; records
    ``(kind, seconds, status)`` in ``log`` and acknowledged upload names in ``acked``."""
    rng = np.random.default_rng(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    done = 0
    while time.time() < stop_at and done < max_requests:
        data = random_png(rng)
        requests = [("search", *multipart({"topk": "10"}, ("q.png", data)))]
        if add_every and done // 2 % add_every == add_every - 1:
            requests.append(("add", *multipart({"query": hashlib.sha256(data).hexdigest(), "tag": "load"}, None)))
        for kind, body, content_type in requests:
            start = time.perf_counter()
            try:
                conn.request("POST", f"/{kind}", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                page, status = response.read().decode("utf-8", "replace"), response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                page, status = "", -1
            log.append((kind, time.perf_counter() - start, status))
            if kind == "add" and status == 200 and "added to the gallery as uploads/" in page:
                acked.append(page.split("added to the gallery as uploads/")[1].split(".png")[0] + ".png")
            done += 1


def check_index(index_dir: Path, acked: list[str], before: int) -> dict:
    """Vectors and metadata agree; every acknowledged add is present."""
    import faiss

    from dmireid.inference import GalleryIndex

    index = GalleryIndex.open(index_dir, device="cpu")
    faiss_ids = np.sort(faiss.vector_to_array(index.store.vectors.id_map))
    meta_ids, meta_vectors = index.store.meta.vectors(index.manifest["dim"])
    stored = faiss.downcast_index(index.store.vectors.index)
    order = np.argsort(faiss.vector_to_array(index.store.vectors.id_map))
    same_vectors = bool(np.array_equal(stored.reconstruct_n(0, stored.ntotal)[order], meta_vectors))
    paths = {p for (p,) in index.store.meta.fetch("SELECT path FROM images WHERE tag = 'load'")}
    missing = [a for a in acked if str((index_dir / "uploads" / a).resolve()) not in paths]
    return {"rows": int(len(meta_ids)), "ids_agree": bool(np.array_equal(faiss_ids, meta_ids)),
            "vectors_agree": same_vectors, "acknowledged_adds": len(set(acked)), "missing_adds": missing,
            "rows_added": int(len(meta_ids)) - before}


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def run_load(work: Path, gallery: int, clients: int, seconds: float, max_requests: int, add_every: int) -> dict:
    index_dir = make_index(work, gallery)
    before = gallery + 8
    port = free_port()
    server = start_server(index_dir, port)
    log, acked = [], []
    try:
        stop_at = time.time() + seconds
        threads = [threading.Thread(target=client, args=(port, seed, stop_at, max_requests, add_every, log, acked))
                   for seed in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 300)
        elapsed = time.perf_counter() - start
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    result = {"gallery": gallery, "clients": clients, "seconds": elapsed, "requests": len(log),
              "requests_per_s": len(log) / elapsed, "errors": sum(1 for _, _, s in log if s != 200)}
    for kind in ("search", "add"):
        times = [t for k, t, s in log if k == kind]
        result[kind] = {"count": len(times), "p50_ms": percentile_ms(times, 50), "p99_ms": percentile_ms(times, 99),
                        "errors": sum(1 for k, _, s in log if k == kind and s != 200)}
    result["check"] = check_index(index_dir, acked, before)
    return result


def parser():
    p = harness.arguments(__doc__, threads=None, quick="2k gallery, 4 clients, 8 s", json_path=False)
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--max-requests", type=int, default=2000, help="per client")
    p.add_argument("--add-every", type=int, default=4, help="every n-th search is followed by an add of its query")
    p.add_argument("--json", help="also write the result here")
    return p


def body(args, report) -> None:
    if args.quick:
        args.gallery, args.clients, args.seconds = 2000, 4, 8
    print(harness.machine_line(harness.machine(args.threads)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_load(Path(tmp), args.gallery, args.clients, args.seconds, args.max_requests, args.add_every)
    print(json.dumps(result, indent=1))
    print(harness.machine_line(harness.machine(args.threads)))
    print(f"{result['clients']} clients, {result['gallery']} gallery: {result['requests_per_s']:.1f} requests/s, "
          f"search p50 {result['search']['p50_ms']:.0f} ms p99 {result['search']['p99_ms']:.0f} ms, add p50 "
          f"{result['add']['p50_ms']:.0f} ms p99 {result['add']['p99_ms']:.0f} ms, {result['errors']} errors; "
          f"index whole: {result['check']['ids_agree'] and result['check']['vectors_agree']}, "
          f"{result['check']['acknowledged_adds']} acknowledged adds, {len(result['check']['missing_adds'])} missing")
    if args.json:
        harness.write_json(args.json, result)


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
