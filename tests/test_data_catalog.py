"""The dataset registry: plug-in loaders, options read from the loader's signature, one-line errors."""

import ast
from pathlib import Path

import pytest

import dmireid.data as data
from dmireid.data import DATASETS, ReIDDataset, dataset_options, find_dataset, load_dataset, register_dataset
from dmireid.errors import DmireidError

from test_data_datasets import make_market, one_line_error


@pytest.fixture
def scratch_registry():
    """Remove what a test registers (the registry is process-wide)."""
    before = set(DATASETS.names())
    yield
    for name in set(DATASETS.names()) - before:
        del DATASETS._items[name]


def test_builtin_names_and_their_options():
    builtin = [n for n in DATASETS.names() if DATASETS.get(n).__module__.startswith("dmireid.")]  # not plug-ins
    assert builtin == ["cuhk01", "cuhk03", "dukemtmcreid", "folder", "market1501", "msmt17", "personx",
                                "synthetic", "tracklets", "veri776"]
    tracklet_options = ("tracklets", "tracklet_fragments", "tracklet_switches", "tracklet_seed", "tracklet_frames")
    assert dataset_options("market1501") == dataset_options("personx") == tracklet_options  # derived tracklets
    assert dataset_options("tracklets") == ("test_root",)
    assert dataset_options("cuhk03") == ("boxes",) and dataset_options("cuhk01") == ("split_seed",)
    assert dataset_options("folder") == ("camera_pattern",)
    assert dataset_options("synthetic") == ("num_ids", "num_cameras", "seed", "height", "width", "images_per_camera")
    assert find_dataset("Market-1501")[0] == "market1501" and find_dataset("VeRi-776")[0] == "veri776"
    assert find_dataset("DukeMTMC_reID")[0] == "dukemtmcreid" and find_dataset("PersonX")[0] == "personx"


def test_plugin_loader_gets_its_options(tmp_path, scratch_registry):
    calls = []

    @register_dataset("My-Set")
    def load_my_set(root, min_images: int = 1, *, tag: str = "x") -> ReIDDataset:
        calls.append((root, min_images, tag))
        return ReIDDataset("myset", str(root), train=[(str(tmp_path / "a.jpg"), -1, 0)] * min_images)

    assert find_dataset("my_set") == ("myset", load_my_set) and dataset_options("MySet") == ("min_images", "tag")
    ds = load_dataset("MY-SET", tmp_path, min_images=3, tag="y")
    assert calls == [(tmp_path, 3, "y")] and len(ds.train) == 3
    one_line_error(lambda: load_dataset("my_set", tmp_path, min_imgs=2), "min_imgs", "myset", "min_images, tag")
    one_line_error(lambda: load_dataset("my_set", None), "myset", "root", "data.root")
    one_line_error(lambda: register_dataset("my-set", lambda root: None), "myset", "already registered")


def test_option_values_checked_from_annotations(tmp_path, scratch_registry):
    from typing import Literal

    def load_typed(root, size: int = 1, mode: Literal["a", "b"] = "a", flag: Literal[True, False] = True,
                   free: "NoSuchType" = None) -> ReIDDataset:  # noqa: F821 - an unresolvable annotation
        return ReIDDataset("typed", str(root), train=[(f"{mode}{flag}.jpg", -1, 0)] * size)

    register_dataset("typed", load_typed)
    # an annotation that does not resolve leaves its own option unchecked, not the others
    assert load_dataset("typed", tmp_path, free=object()).train == [("aTrue.jpg", -1, 0)]
    one_line_error(lambda: load_dataset("typed", tmp_path, mode="z"), "data.options.mode='z'", "a, b", "typed")
    one_line_error(lambda: load_dataset("typed", tmp_path, sizes=2), "unknown option(s) sizes")

    def load_checked(root, size: int = 1, mode: Literal["a", "b"] = "a", flag: Literal[True, False] = True):
        return ReIDDataset("checked", str(root), train=[(f"{mode}{flag}.jpg", -1, 0)] * size)

    register_dataset("checked", load_checked)
    assert load_dataset("checked", tmp_path, size=2, mode="b", flag=False).train == [("bFalse.jpg", -1, 0)] * 2
    one_line_error(lambda: load_dataset("checked", tmp_path, mode="c"), "data.options.mode='c'", "a, b", "checked")
    one_line_error(lambda: load_dataset("checked", tmp_path, flag=1), "data.options.flag=1", "True, False")
    one_line_error(lambda: load_dataset("checked", tmp_path, size="2"), "data.options.size='2'", "integer")
    one_line_error(lambda: load_dataset("checked", tmp_path, size=True), "data.options.size=True", "integer")
    one_line_error(lambda: load_dataset("checked", tmp_path, size=2.0), "data.options.size=2.0", "integer")


def test_required_options_var_kwargs_and_optional_root(tmp_path, scratch_registry):
    seen = {}
    register_dataset("needs_size", lambda root, size: ReIDDataset("needs_size", str(root)))
    one_line_error(lambda: load_dataset("needs_size", tmp_path), "needssize", "size", "data.options")
    assert load_dataset("needs_size", tmp_path, size=3).name == "needs_size"

    def anything(root=None, **options):
        seen.update(options, root=root)
        return ReIDDataset("anything", str(root))

    register_dataset("anything", anything)
    load_dataset("anything", None, whatever=1)  # a root with a default may be None; **options takes any
    assert seen == {"whatever": 1, "root": None}


def test_bad_loaders_are_one_line_errors(tmp_path, scratch_registry):
    one_line_error(lambda: register_dataset("no_root", lambda: None), "no_root", "root folder")
    one_line_error(lambda: register_dataset("kw_root", lambda *, root: None), "kw_root", "first positional")
    one_line_error(lambda: register_dataset("", lambda root: None), "non-empty")
    register_dataset("wrong_type", lambda root: [("a.jpg", 1, 0)])
    one_line_error(lambda: load_dataset("wrong_type", tmp_path), "wrongtype", "list", "ReIDDataset")
    one_line_error(lambda: load_dataset("vi-per", tmp_path), "vi-per", "data.name", "market1501", "veri776")


def test_builtin_loaders_still_work_through_the_registry(tmp_path):
    root = make_market(tmp_path)
    assert load_dataset("Market-1501", tmp_path).train == DATASETS.get("market1501")(tmp_path).train
    assert load_dataset("market1501", root).root == str(root)


def test_no_import_between_datasets_and_synthetic():
    """The loaders' modules import the shared layout module, never each other (not even in functions)."""
    folder = Path(data.__file__).parent
    imported = {}
    loaders = {"datasets", "synthetic", "cuhk"}
    for module in (*sorted(loaders), "market_layout", "catalog", "samples", "synthetic_drawing"):
        tree = ast.parse((folder / f"{module}.py").read_text())
        imported[module] = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    for module in loaders:
        assert not imported[module] & (loaders - {module}), module
    for low in ("market_layout", "catalog", "samples", "synthetic_drawing"):
        assert not imported[low] & loaders, low
