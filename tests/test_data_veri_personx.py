"""VeRi-776 and PersonX loaders on fake trees (empty files) with the releases' naming."""

import re

import pytest

from dmireid.data import load_dataset

from test_data_datasets import one_line_error, rel, touch


def table_rows(ds):
    pattern = r"^\s*(train|query|gallery)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*$"
    return {m.group(1): tuple(map(int, m.groups()[1:])) for m in re.finditer(pattern, ds.statistics_table(), re.M)}


# ------------------------------------------------------------------------------------- VeRi-776


def make_veri(base, name="VeRi"):
    root = base / name if name else base
    touch(root / "image_train", "0001_c001_00016450_0.jpg", "0001_c020_00016460_0.jpg", "0776_c013_00080110_1.jpg",
          "-1_c002_00000001_0.jpg", "Thumbs.db")
    touch(root / "image_query", "0002_c002_00030600_1.jpg")
    touch(root / "image_test", "0002_c002_00030700_0.jpg", "0002_c007_00030800_0.jpg", "0000_c005_00000001_0.jpg")
    for extra in ("name_train.txt", "name_query.txt", "name_test.txt", "gt_image.txt", "jk_image.txt"):
        (root / extra).write_text("")
    return root


@pytest.mark.parametrize("alias", ["VeRi", "VeRi-776", "veri", None])
def test_veri_samples_cameras_and_ids(tmp_path, alias):
    base = tmp_path / "0009_c003"  # a parent named like a file must not matter
    root = make_veri(base, alias)
    ds = load_dataset("veri776", base)
    assert ds.name == "veri776" and ds.root == str(root)
    assert rel(ds.train, root) == [("image_train/0001_c001_00016450_0.jpg", 1, 0),
                                   ("image_train/0001_c020_00016460_0.jpg", 1, 19),
                                   ("image_train/0776_c013_00080110_1.jpg", 776, 12)]  # junk -1 dropped
    assert rel(ds.query, root) == [("image_query/0002_c002_00030600_1.jpg", 2, 1)]  # ids not relabelled
    assert [(pid, cam) for _, pid, cam in ds.gallery] == [(0, 4), (2, 1), (2, 6)]  # 0 is an id as in the peers
    assert load_dataset("VeRi-776", base).train == ds.train
    assert table_rows(ds) == {"train": (2, 3, 3), "query": (1, 1, 1), "gallery": (2, 3, 3)}


def test_veri_release_counts(tmp_path):
    """576 train ids, 200 test ids (query ids = gallery ids), 20 cameras, as in the release."""
    root = tmp_path / "VeRi"
    train = [f"{pid:04d}_c{(pid * 7 + k) % 20 + 1:03d}_{pid * 10 + k:08d}_0.jpg"
             for pid in range(1, 577) for k in (0, 1)]
    test_ids = range(577, 777)
    query = [f"{pid:04d}_c{pid % 20 + 1:03d}_{pid:08d}_0.jpg" for pid in test_ids]
    gallery = [f"{pid:04d}_c{(pid + k) % 20 + 1:03d}_{pid * 3 + k:08d}_1.jpg" for pid in test_ids for k in (1, 2, 3)]
    touch(root / "image_train", *train)
    touch(root / "image_query", *query)
    touch(root / "image_test", *gallery)
    ds = load_dataset("veri776", tmp_path)
    assert table_rows(ds) == {"train": (576, 1152, 20), "query": (200, 200, 20), "gallery": (200, 600, 20)}
    assert ds.num_train_ids == 576 and ds.num_cameras == 20
    assert {cam for _, _, cam in ds.train} == set(range(20))


def test_veri_errors(tmp_path):
    one_line_error(lambda: load_dataset("veri776", tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_dataset("veri776", tmp_path / "empty"), tmp_path / "empty", "not a VeRi-776 folder",
                   "image_train", "VeRi")
    one_line_error(lambda: load_dataset("veri776", None), "veri776", "data.root")
    partial = tmp_path / "partial"
    touch(partial / "image_train", "0001_c001_00016450_0.jpg")
    touch(partial / "image_query", "0002_c002_00030600_1.jpg")
    one_line_error(lambda: load_dataset("veri776", partial), partial, "missing image_test")
    market = tmp_path / "market"  # the person layout is not VeRi's
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        touch(market / sub, "0001_c1s1_000001_00.jpg")
    one_line_error(lambda: load_dataset("veri776", market), market, "image_query")


@pytest.mark.parametrize("split,name,needles", [
    ("image_train", "car_0001.jpg", ["car_0001.jpg", "<pid>_c<camera>", "0001_c001_00016450_0.jpg"]),
    ("image_query", "0001_00016450_0.jpg", ["0001_00016450_0.jpg", "VeRi-776"]),
    ("image_test", "0002_c021_00030700_0.jpg", ["0002_c021_00030700_0.jpg", "camera 21", "1..20"]),
    ("image_test", "0002_c000_00030700_0.jpg", ["0002_c000_00030700_0.jpg", "camera 0"]),
    ("image_train", "0777_c001_00000001_0.jpg", ["0777_c001_00000001_0.jpg", "777", "0..776"]),
    ("image_query", "-2_c001_00000001_0.jpg", ["-2_c001_00000001_0.jpg", "-2"]),
])
def test_veri_bad_file_names(tmp_path, split, name, needles):
    root = make_veri(tmp_path, None)
    touch(root / split, name)
    one_line_error(lambda: load_dataset("veri776", root), root / split / name, *needles)


def test_veri_split_without_images(tmp_path):
    root = make_veri(tmp_path, None)
    for f in (root / "image_query").iterdir():
        f.unlink()
    one_line_error(lambda: load_dataset("veri776", root), root / "image_query", "no images")


# -------------------------------------------------------------------------------------- PersonX


def make_personx(base, name="PersonX"):
    root = base / name if name else base
    touch(root / "bounding_box_train", "0000_c3_0001.jpg", "0001_c3_0002.jpg", "0001_c12_0003.jpg",
          "0002_c8_0004.jpg", "desktop.ini")
    touch(root / "query", "0500_c4_0001.jpg", "0500_c10_0002.jpg")
    touch(root / "bounding_box_test", "0500_c11_0003.jpg", "0500_c4_0004.jpg", "0501_c12_0005.jpg")
    return root


@pytest.mark.parametrize("alias", ["PersonX", "personx", None])
def test_personx_cameras_map_to_0_5(tmp_path, alias):
    root = make_personx(tmp_path / "x_c1s1", alias)
    ds = load_dataset("personx", tmp_path / "x_c1s1")
    assert ds.name == "personx" and ds.root == str(root)
    # cameras 3, 4, 8, 10, 11, 12 -> 0..5; pid 0 is a person (kept in train), as the peers' loader does
    assert rel(ds.train, root) == [("bounding_box_train/0000_c3_0001.jpg", 0, 0),
                                   ("bounding_box_train/0001_c12_0003.jpg", 1, 5),
                                   ("bounding_box_train/0001_c3_0002.jpg", 1, 0),
                                   ("bounding_box_train/0002_c8_0004.jpg", 2, 2)]
    assert [(pid, cam) for _, pid, cam in ds.query] == [(500, 3), (500, 1)]  # sorted by path: c10 before c4
    assert [(pid, cam) for _, pid, cam in ds.gallery] == [(500, 4), (500, 1), (501, 5)]
    assert table_rows(ds) == {"train": (3, 4, 3), "query": (1, 2, 2), "gallery": (2, 3, 3)}
    assert ds.num_cameras == 6


def test_personx_errors(tmp_path):
    one_line_error(lambda: load_dataset("personx", tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_dataset("personx", tmp_path / "empty"), "not a PersonX folder", "bounding_box_train",
                   "PersonX")
    root = make_personx(tmp_path, None)
    touch(root / "query", "0502_c5_0001.jpg")
    one_line_error(lambda: load_dataset("personx", root), root / "query" / "0502_c5_0001.jpg", "camera 5",
                   "3, 4, 8, 10, 11, 12", "PersonX")
    (root / "query" / "0502_c5_0001.jpg").unlink()
    touch(root / "bounding_box_test", "person_0001.jpg")
    one_line_error(lambda: load_dataset("personx", root), "person_0001.jpg", "<pid>_c<camera>", "PersonX")
    (root / "bounding_box_test" / "person_0001.jpg").unlink()
    (root / "bounding_box_test").rename(root / "test")
    one_line_error(lambda: load_dataset("personx", root), root, "missing bounding_box_test")
