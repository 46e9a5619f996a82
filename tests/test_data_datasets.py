"""Dataset loaders on small fake trees (empty files: loading never decodes pixels)."""

import re

import pytest

from dmireid.data import ReIDDataset, load_dataset
from dmireid.errors import DmireidError


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def one_line_error(call, *needles):
    """Run ``call``; it must raise DmireidError with a one-line message holding every needle."""
    with pytest.raises(DmireidError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, (needle, message)
    return message


def rel(samples, root):
    return [(str(p)[len(str(root)) + 1:], pid, cam) for p, pid, cam in samples]


# ---------------------------------------------------------------------------------------- Market


def make_market(base, name="Market-1501-v15.09.15"):
    root = base / name if name else base
    touch(root / "bounding_box_train", "0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
          "0007_c6s4_002202_00.jpg", "-1_c1s1_000001_00.jpg", "0000_c3s1_000002_00.jpg", "Thumbs.db")
    touch(root / "query", "0003_c1s1_000100_00.jpg", "0003_c4s2_000200_00.jpg")
    touch(root / "bounding_box_test", "0003_c2s1_000300_01.jpg", "0000_c1s1_000400_00.jpg",
          "-1_c3s1_000500_00.jpg", "0005_c5s3_000600_02.jpg")
    (root / "gt_bbox").mkdir()
    return root


@pytest.mark.parametrize("alias", ["Market-1501-v15.09.15", "Market-1501", "market1501", None])
def test_market_counts_pids_camids(tmp_path, alias):
    # parent folders whose names look like Market file names must not matter
    base = tmp_path / "0009_c3s1" / "x_c1s1"
    root = make_market(base, alias)
    ds = load_dataset("market1501", base)
    assert isinstance(ds, ReIDDataset) and ds.name == "market1501" and ds.root == str(root)
    assert rel(ds.train, root) == [("bounding_box_train/0002_c1s1_000451_03.jpg", 2, 0),
                                   ("bounding_box_train/0002_c2s1_000551_01.jpg", 2, 1),
                                   ("bounding_box_train/0007_c6s4_002202_00.jpg", 7, 5)]
    assert rel(ds.query, root) == [("query/0003_c1s1_000100_00.jpg", 3, 0), ("query/0003_c4s2_000200_00.jpg", 3, 3)]
    assert rel(ds.gallery, root) == [("bounding_box_test/0000_c1s1_000400_00.jpg", 0, 0),
                                     ("bounding_box_test/0003_c2s1_000300_01.jpg", 3, 1),
                                     ("bounding_box_test/0005_c5s3_000600_02.jpg", 5, 4)]
    assert all(isinstance(p, str) and isinstance(pid, int) and isinstance(cam, int) for p, pid, cam in ds.train)


def test_statistics_table(tmp_path):
    ds = load_dataset("market1501", make_market(tmp_path))
    table = ds.statistics_table()
    rows = {m.group(1): tuple(map(int, m.groups()[1:]))
            for m in re.finditer(r"^\s*(train|query|gallery)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*$", table, re.M)}
    assert rows == {"train": (2, 3, 3), "query": (1, 2, 2), "gallery": (3, 3, 3)}
    assert "# ids" in table and "# images" in table and "# cameras" in table
    assert ds.num_train_ids == 2 and ds.num_cameras == 6 and ds.split_stats("gallery") == (3, 3, 3)


def test_market_errors(tmp_path):
    one_line_error(lambda: load_dataset("market1501", tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_dataset("market1501", tmp_path / "empty"), tmp_path / "empty", "bounding_box_train")
    one_line_error(lambda: load_dataset("market1501", None), "market1501", "root")

    partial = tmp_path / "partial"
    touch(partial / "bounding_box_train", "0001_c1s1_000001_00.jpg")
    touch(partial / "query", "0001_c1s1_000001_00.jpg")
    one_line_error(lambda: load_dataset("market1501", partial), partial, "missing bounding_box_test")


@pytest.mark.parametrize("split,name,needles", [
    ("query", "abc.jpg", ["abc.jpg", "<pid>_c<camera>"]),
    ("bounding_box_train", "0001_s1_000001_00.jpg", ["0001_s1_000001_00.jpg", "0002_c1s1_000451_03.jpg"]),
    ("bounding_box_test", "0001_c7s1_000001_00.jpg", ["0001_c7s1_000001_00.jpg", "camera 7", "1..6"]),
    ("bounding_box_test", "0001_c0s1_000001_00.jpg", ["0001_c0s1_000001_00.jpg", "camera 0"]),
    ("query", "-2_c1s1_000001_00.jpg", ["-2_c1s1_000001_00.jpg", "-2"]),
])
def test_market_bad_file_names(tmp_path, split, name, needles):
    root = make_market(tmp_path, None)
    touch(root / split, name)
    one_line_error(lambda: load_dataset("market1501", root), root / split / name, *needles)


def test_market_split_without_images(tmp_path):
    root = make_market(tmp_path, None)
    for f in (root / "bounding_box_test").iterdir():
        f.unlink()
    touch(root / "bounding_box_test", "Thumbs.db")
    one_line_error(lambda: load_dataset("market1501", root), root / "bounding_box_test", "no images")


# ------------------------------------------------------------------------------------------ Duke


def test_duke(tmp_path):
    root = tmp_path / "DukeMTMC-reID"
    touch(root / "bounding_box_train", "0001_c2_f0046182.jpg", "0001_c8_f0100000.jpg")
    touch(root / "query", "0005_c1_f0001234.jpg")
    touch(root / "bounding_box_test", "0005_c3_f0002345.jpg", "0099_c7_f0003456.jpg")
    ds = load_dataset("dukemtmcreid", tmp_path)
    assert rel(ds.train, root) == [("bounding_box_train/0001_c2_f0046182.jpg", 1, 1),
                                   ("bounding_box_train/0001_c8_f0100000.jpg", 1, 7)]
    assert [(pid, cam) for _, pid, cam in ds.gallery] == [(5, 2), (99, 6)]
    touch(root / "query", "0006_c9_f0000001.jpg")
    one_line_error(lambda: load_dataset("dukemtmcreid", tmp_path), "0006_c9_f0000001.jpg", "camera 9", "1..8")


# ---------------------------------------------------------------------------------------- MSMT17


def make_msmt(base, version="V1"):
    root = base / f"MSMT17_{version}"
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    lists = {
        "list_train.txt": (train_dir, ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                                       "0000/0000_001_05_0303morning_0016_1.jpg 0",
                                       "0001/0001_000_15_0303noon_0100_0.jpg 1"]),
        "list_val.txt": (train_dir, ["0001/0001_001_02_0303noon_0101_0.jpg 1"]),
        "list_query.txt": (test_dir, ["0000/0000_000_03_0113morning_0001_0.jpg 0"]),
        "list_gallery.txt": (test_dir, ["0000/0000_001_04_0113morning_0002_0.jpg 0",
                                        "0002/0002_000_10_0114noon_0003_0.jpg 2", ""]),
    }
    for list_name, (folder, lines) in lists.items():
        touch(root / folder, *[line.split()[0] for line in lines if line])
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root, train_dir, test_dir


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_official_lists(tmp_path, version):
    root, train_dir, test_dir = make_msmt(tmp_path / "a_c1s1", version)
    ds = load_dataset("msmt17", root.parent)
    assert ds.root == str(root)
    assert rel(ds.train, root) == [(f"{train_dir}/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0),
                                   (f"{train_dir}/0000/0000_001_05_0303morning_0016_1.jpg", 0, 4),
                                   (f"{train_dir}/0001/0001_000_15_0303noon_0100_0.jpg", 1, 14),
                                   (f"{train_dir}/0001/0001_001_02_0303noon_0101_0.jpg", 1, 1)]
    assert rel(ds.query, root) == [(f"{test_dir}/0000/0000_000_03_0113morning_0001_0.jpg", 0, 2)]
    assert [(pid, cam) for _, pid, cam in ds.gallery] == [(0, 3), (2, 9)]
    assert load_dataset("msmt17", root).train == ds.train  # the release folder itself


def test_msmt17_list_errors(tmp_path):
    root, train_dir, _ = make_msmt(tmp_path)
    (root / train_dir / "0001" / "0001_001_02_0303noon_0101_0.jpg").unlink()
    one_line_error(lambda: load_dataset("msmt17", root), root / "list_val.txt", "0001_001_02_0303noon_0101_0.jpg",
                   "does not exist")

    root, train_dir, _ = make_msmt(tmp_path / "b")
    with open(root / "list_query.txt", "a") as f:
        f.write("0003/0003_000_16_0113morning_0001_0.jpg 3\n")
    touch(root / "test", "0003/0003_000_16_0113morning_0001_0.jpg")
    one_line_error(lambda: load_dataset("msmt17", root), "0003_000_16_0113morning_0001_0.jpg", "camera 16", "1..15")

    root, _, _ = make_msmt(tmp_path / "c")
    with open(root / "list_gallery.txt", "a") as f:
        f.write("0003/0003.jpg 3\n")
    touch(root / "test", "0003/0003.jpg")
    one_line_error(lambda: load_dataset("msmt17", root), "0003.jpg", "<camera>")

    root, _, _ = make_msmt(tmp_path / "d")
    (root / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg zero\n")
    one_line_error(lambda: load_dataset("msmt17", root), root / "list_train.txt", ":1:", "<label>")

    root, _, _ = make_msmt(tmp_path / "e")
    (root / "list_gallery.txt").unlink()
    one_line_error(lambda: load_dataset("msmt17", root), root, "list_gallery.txt")

    root, _, _ = make_msmt(tmp_path / "f")
    for f in (root / "test").rglob("*.jpg"):
        f.unlink()
    (root / "test").rename(root / "elsewhere")
    one_line_error(lambda: load_dataset("msmt17", root), root, "list_query.txt", "test or mask_test_v2")


def test_msmt17_market_style_repack(tmp_path):
    root = tmp_path / "MSMT17"
    touch(root / "bounding_box_train", "0000_c1_0000.jpg", "0000_c3_0001.jpg", "0001_c15_0002.jpg")
    touch(root / "query", "0000_c2_0003.jpg")
    touch(root / "bounding_box_test", "0000_c4_0004.jpg", "-1_c4_0005.jpg")
    ds = load_dataset("msmt17", tmp_path)
    assert [(pid, cam) for _, pid, cam in ds.train] == [(0, 0), (0, 2), (1, 14)]  # pid 0 is a real person
    assert [(pid, cam) for _, pid, cam in ds.query + ds.gallery] == [(0, 1), (0, 3)]
    (tmp_path / "other").mkdir()
    one_line_error(lambda: load_dataset("msmt17", tmp_path / "other"), tmp_path / "other", "list_train.txt",
                   "bounding_box_train")


# ---------------------------------------------------------------------------------------- folder


def test_folder_market_layout_any_camera_count(tmp_path):
    touch(tmp_path / "bounding_box_train", "0001_c12_a.jpg", "0000_c1_b.jpg")
    touch(tmp_path / "query", "0002_c3_x.png")
    touch(tmp_path / "bounding_box_test", "0002_c20_y.jpg", "0000_c1_z.jpg")
    ds = load_dataset("folder", tmp_path)
    assert [(pid, cam) for _, pid, cam in ds.train] == [(1, 11)]
    assert [(pid, cam) for _, pid, cam in ds.gallery] == [(0, 0), (2, 19)]
    (tmp_path / "query" / "0002_c3_x.png").rename(tmp_path / "query" / "0002_c0_x.png")
    one_line_error(lambda: load_dataset("folder", tmp_path), "0002_c0_x.png", "camera 0")


def test_folder_unlabelled_recursive(tmp_path):
    touch(tmp_path, "cam3_0001.jpg", "nested_c9/cam1_0002.PNG", "deep/er/cam12-0003.jpeg", "notes.txt")
    ds = load_dataset("folder", tmp_path)
    assert [(p[len(str(tmp_path)) + 1:], pid, cam) for p, pid, cam in ds.train] == [
        ("cam3_0001.jpg", -1, 0), ("deep/er/cam12-0003.jpeg", -1, 0), ("nested_c9/cam1_0002.PNG", -1, 0)]
    assert ds.query == [] and ds.gallery == []
    ds = load_dataset("folder", tmp_path, camera_pattern=r"cam(\d+)")
    assert [cam for _, _, cam in ds.train] == [2, 11, 0]
    assert ds.split_stats("train") == (0, 3, 3)

    touch(tmp_path, "unnamed.jpg")
    one_line_error(lambda: load_dataset("folder", tmp_path, camera_pattern=r"cam(\d+)"), tmp_path / "unnamed.jpg",
                   "camera_pattern")
    one_line_error(lambda: load_dataset("folder", tmp_path, camera_pattern="cam("), "camera_pattern", "cam(")
    one_line_error(lambda: load_dataset("folder", tmp_path, camera_pattern="cam"), "group")
    (tmp_path / "void").mkdir()
    one_line_error(lambda: load_dataset("folder", tmp_path / "void"), tmp_path / "void", "no images")


def test_folder_partial_market_layout_is_an_error(tmp_path):
    touch(tmp_path / "bounding_box_train", "0001_c1_a.jpg")
    one_line_error(lambda: load_dataset("folder", tmp_path), tmp_path, "query")


def test_unknown_name_and_option(tmp_path):
    one_line_error(lambda: load_dataset("viper", tmp_path), "viper", "market1501")
    one_line_error(lambda: load_dataset("market1501", tmp_path, camera_pattern="x"), "camera_pattern", "market1501")
    one_line_error(lambda: load_dataset("synthetic", tmp_path, num_idz=3), "num_idz", "num_ids")


def test_split_that_is_a_file(tmp_path):
    root = make_market(tmp_path, None)
    for f in (root / "query").iterdir():
        f.unlink()
    (root / "query").rmdir()
    (root / "query").write_text("")
    one_line_error(lambda: load_dataset("market1501", root), root / "query", "folder")
