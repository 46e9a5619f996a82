"""Helpers of the gallery tests: a tiny checkpoint (random ResNet-18 at 32×16) and tiny images."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmireid.embedding.checkpoint import save_checkpoint
from dmireid.config import load_config
from dmireid import build


def tiny_checkpoint(path: Path, seed: int = 0, **extra) -> Path:
    """The smoke preset's model at 32×16 with seeded random weights (no ImageNet file needed)."""
    cfg = load_config("smoke", ["data.height=32", "data.width=16"])
    torch.manual_seed(seed)
    model = build.model(cfg, for_inference=True).eval()
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "model": model.state_dict(), "ema_model": None, **extra},
                    path)
    return path


def tiny_images(folder: Path, count: int, seed: int = 0, start: int = 0) -> list[str]:
    """``count`` random 32×16 PNGs named Market-style (``0003_c2s1_000031_00.png``), sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(start, start + count):
        paths.append(str(folder / f"{i // 4:04d}_c{i % 3 + 1}s1_{i:06d}_00.png"))
        Image.fromarray((rng.random((32, 16, 3)) * 255).astype(np.uint8)).save(paths[-1])
    return sorted(paths)


def faiss_rows(index) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` held by an IndexIDMap2 over a flat index, sorted by id."""
    import faiss

    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    vectors = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
    order = np.argsort(ids)
    return ids[order], vectors[order]
