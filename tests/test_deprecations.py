"""The 0.2 import paths of moved public names keep working for one release, each with a
DeprecationWarning that names the new path, and give the very same object."""

import importlib
import warnings

import pytest

MOVED = [  # (old module, name, new module)
    ("dmireid.checkpoint", "save_checkpoint", "dmireid.embedding.checkpoint"),
    ("dmireid.checkpoint", "capture_rng_state", "dmireid.embedding.checkpoint"),
    ("dmireid.inference.extraction", "extract_features", "dmireid.embedding.extract"),
    ("dmireid.inference.extractor", "FeatureExtractor", "dmireid.embedding.feature_extractor"),
    ("dmireid.inference.loading", "load_encoder", "dmireid.embedding.encoder"),
    ("dmireid.inference.loading", "weights_fingerprint", "dmireid.embedding.encoder"),
    ("dmireid.inference.inputs", "collect_image_paths", "dmireid.embedding.inputs"),
    ("dmireid.inference.query_gallery", "evaluate_model", "dmireid.embedding.evaluate"),
    ("dmireid.inference.identity_groups", "cluster_folder", "dmireid.inference.grouping"),
    ("dmireid.inference.report", "visualize_run", "dmireid.inference.run_report"),
    ("dmireid.inference", "FeatureExtractor", "dmireid.embedding"),
    ("dmireid.inference", "extract_features", "dmireid.embedding"),
    ("dmireid.inference", "evaluate_model", "dmireid.embedding"),
]


@pytest.mark.parametrize("old, name, new", MOVED)
def test_an_old_path_warns_with_the_new_one_and_gives_the_same_object(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning) as caught:
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    message = str(caught[0].message)
    assert f"{old}.{name}" in message and f"{new}.{name}" in message and "0.4" in message


def test_current_names_do_not_warn_and_unknown_names_still_fail():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from dmireid.embedding import FeatureExtractor  # noqa: F401
        from dmireid.inference import GalleryIndex, search  # noqa: F401
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        importlib.import_module("dmireid.inference").nothing_here
    with pytest.raises(AttributeError):
        importlib.import_module("dmireid.checkpoint").not_a_name


def test_trainer_record_is_a_deprecated_view_of_the_storage():
    from dmireid.engine import EventStorage

    class Bare:  # the property alone, on an object holding a storage
        from dmireid.engine import Trainer
        record = Trainer.record
    bare = Bare()
    bare.storage = EventStorage()
    bare.storage.begin_epoch(0, loss=1.5)
    with pytest.warns(DeprecationWarning, match="Trainer.storage"):
        assert bare.record == {"epoch": 0, "loss": 1.5}


def test_event_storage_writes_each_result_once_per_epoch():
    from dmireid.engine import EventStorage

    storage = EventStorage()
    storage.begin_epoch(0, lr=0.1)
    storage.put(loss=2.0)
    with pytest.raises(ValueError, match="loss already written"):
        storage.put(loss=3.0)
    latest = storage.latest
    latest["loss"] = 9.0  # a copy: readers cannot change the record
    assert storage.latest == {"epoch": 0, "lr": 0.1, "loss": 2.0}
    storage.end_epoch()
    storage.begin_epoch(1)
    storage.put(loss=1.0)  # a new epoch: written again
    assert [e["loss"] for e in storage.history] == [2.0] and storage.latest == {"epoch": 1, "loss": 1.0}
