"""Console logging for the commands, set up in one place (``logging``, never a ``sys.stdout`` tee)."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def setup_logging(run_dir: Path | None = None, quiet: bool = False) -> None:
    """Console logging (rank 0 only under torchrun) and, for training, ``run_dir/train.log``."""
    if int(os.environ.get("RANK", "0")) != 0:
        logging.basicConfig(level=logging.WARNING, format="[rank %(process)d] %(levelname)s %(message)s")
        return
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every SIMD variant it tries
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logging.getLogger().addHandler(handler)
