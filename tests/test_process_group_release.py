"""A finished run frees its process group before the interpreter shuts down.

DDP holds the process group: left alive until interpreter shutdown, gloo's threads are torn down
after Python's and a finished two-node run could abort with SIGABRT (seen once in CI).
"""

import gc
import weakref

import pytest
import torch
import torch.distributed as torch_dist

from dmireid.engine.session import TrainingSession


@pytest.fixture
def one_process_group(tmp_path):
    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def test_release_drops_the_ddp_wrapper_and_keeps_the_model(one_process_group):
    model = torch.nn.Linear(3, 2)
    session = object.__new__(TrainingSession)  # only the attribute the method reads
    session.model = torch.nn.parallel.DistributedDataParallel(model)
    wrapper = weakref.ref(session.model)
    session.release_process_group()
    gc.collect()
    assert session.model is model
    assert wrapper() is None, "something still holds the DDP wrapper (and with it the process group)"


def test_release_before_setup_is_a_no_op():
    session = object.__new__(TrainingSession)
    session.release_process_group()
    assert not hasattr(session, "model")
