"""Shared test set-up: passive OpenMP waits and one torch thread (2-core CI machines)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic Market-layout dataset shared by tests (20 ids, 3 cameras)."""
    from dmireid.data import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(root / "synth", num_ids=20, num_cameras=3, seed=0, height=64, width=32)


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Drop root-logger handlers a test added (the CLI's basicConfig(force=True) binds captured streams)."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
