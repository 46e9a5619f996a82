"""CUHK03 (CUHK03-NP, torchreid's layout) and CUHK01 loaders on fake trees: tiny png files and a
small new-protocol .mat written with scipy; counts, cameras, the split, relabelling, one-line errors
and ``dmireid check-data`` on both layouts."""

import io

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from dmireid.cli import main
from dmireid.config import load_config
from dmireid.data import load_dataset
from dmireid.evaluation import evaluate

from test_data_datasets import one_line_error, rel
from test_data_veri_personx import table_rows


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 8), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()

# ---------------------------------------------------------------------------------------- CUHK03
# Two camera pairs: pair 1 persons 1-3, pair 2 persons 1-2 -> labels 1..5 in that order. Images
# 01, 02 in view 1 and 06, 07 in view 2 (torchreid: image < 6 -> view 1). Train = labels 2, 3, 5;
# test = labels 1, 4: query = image 01 and 06, gallery = 02 and 07.
PERSONS = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
TRAIN_LABELS, TEST_LABELS = (2, 3, 5), (1, 4)


def cuhk03_files(boxes):
    """(name, label) of every image; the detected boxes lack one image of pair 1 person 3."""
    files = [(f"{pair}_{person:03d}_{1 if img < 6 else 2}_{img:02d}.png", label)
             for label, (pair, person) in enumerate(PERSONS, 1) for img in (1, 2, 6, 7)]
    return [f for f in files if not (boxes == "detected" and f[0] == "1_003_2_07.png")]


def write_mat(path, names, labels, train, query, gallery, drop=(), dtype=np.int32):
    """A CUHK03-NP config: cell filelist, column vectors of labels and 1-based indices (integers, as
    torchreid indexes numpy arrays with them; ``dtype=np.float64``: MATLAB's default doubles)."""
    filelist = np.empty((len(names), 1), dtype=object)
    filelist[:, 0] = names
    column = lambda values: np.asarray(values, dtype=dtype).reshape(-1, 1)  # noqa: E731
    mat = {"filelist": filelist, "labels": column(labels), "camId": column([n[6:7] == "2" for n in names]) + 1,
           "train_idx": column(train), "query_idx": column(query), "gallery_idx": column(gallery)}
    sio.savemat(str(path), {k: v for k, v in mat.items() if k not in drop})


def make_cuhk03(base, boxes_kinds=("labeled", "detected"), name="cuhk03", dtype=np.int32):
    root = base / name if name else base
    for boxes in boxes_kinds:
        files = cuhk03_files(boxes)[::-1]  # filelist order is not the name order: indices matter
        files.append(("2_002_2_08.png", 5))  # listed, in no split (like the release's spare entry)
        folder = root / f"images_{boxes}"
        folder.mkdir(parents=True)
        for file, _ in files:
            (folder / file).write_bytes(PNG)
        (folder / "2_002_2_09.png").write_bytes(PNG)  # on disk, not listed
        names, labels = [f for f, _ in files], [label for _, label in files]
        index = {f: i + 1 for i, f in enumerate(names)}
        train = [index[f] for f, label in files[:-1] if label in TRAIN_LABELS]
        query = [index[f] for f, label in files if label in TEST_LABELS and f.endswith(("_01.png", "_06.png"))]
        gallery = [index[f] for f, label in files if label in TEST_LABELS and f.endswith(("_02.png", "_07.png"))]
        write_mat(root / f"cuhk03_new_protocol_config_{boxes}.mat", names, labels, train, query, gallery,
                  dtype=dtype)
    return root


def torchreid_form(root, boxes):
    """torchreid's ``_extract_new_split``, written out: (path, pid, view - 1) lists per split."""
    mat = sio.loadmat(str(root / f"cuhk03_new_protocol_config_{boxes}.mat"))
    pids, filelist = mat["labels"].flatten(), mat["filelist"].flatten()
    train_pids = set(pids[mat["train_idx"].flatten() - 1])
    pid2label = {pid: label for label, pid in enumerate(train_pids)}
    out = {}
    for split in ("train", "query", "gallery"):
        rows = []
        for idx in mat[f"{split}_idx"].flatten() - 1:
            name = filelist[int(idx)][0]
            pid = pid2label[pids[int(idx)]] if split == "train" else pids[int(idx)]
            rows.append((str(root / f"images_{boxes}" / name), int(pid), int(name.split("_")[2]) - 1))
        out[split] = sorted(rows)
    return out


@pytest.mark.parametrize("alias", ["cuhk03", "CUHK03", None])
def test_cuhk03_labeled_counts_cameras_and_ids(tmp_path, alias):
    root = make_cuhk03(tmp_path, name=alias)
    ds = load_dataset("cuhk03", tmp_path)
    assert ds.name == "cuhk03" and ds.root == str(root)
    assert table_rows(ds) == {"train": (3, 12, 4), "query": (2, 4, 4), "gallery": (2, 4, 4)}
    # train labels 2, 3, 5 -> 0, 1, 2; camid = 2 (pair - 1) + view - 1
    assert rel(ds.train, root)[:4] == [("images_labeled/1_002_1_01.png", 0, 0), ("images_labeled/1_002_1_02.png", 0, 0),
                                       ("images_labeled/1_002_2_06.png", 0, 1), ("images_labeled/1_002_2_07.png", 0, 1)]
    assert sorted({(pid, cam) for _, pid, cam in ds.train}) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3)]
    assert rel(ds.query, root) == [("images_labeled/1_001_1_01.png", 1, 0), ("images_labeled/1_001_2_06.png", 1, 1),
                                   ("images_labeled/2_001_1_01.png", 4, 2), ("images_labeled/2_001_2_06.png", 4, 3)]
    assert [(pid, cam) for _, pid, cam in ds.gallery] == [(1, 0), (1, 1), (4, 2), (4, 3)]  # test ids = the labels
    assert ds.num_cameras == 4 and ds.num_train_ids == 3
    paths = {p for split in (ds.train, ds.query, ds.gallery) for p, _, _ in split}
    assert not any(p.endswith(("2_002_2_08.png", "2_002_2_09.png")) for p in paths)  # only the split's rows


def test_cuhk03_detected_boxes_read_their_own_folder_and_mat(tmp_path):
    root = make_cuhk03(tmp_path)
    ds = load_dataset("cuhk03", root, boxes="detected")
    assert table_rows(ds) == {"train": (3, 11, 4), "query": (2, 4, 4), "gallery": (2, 4, 4)}
    assert all("/images_detected/" in p for split in (ds.train, ds.query, ds.gallery) for p, _, _ in split)
    labeled = load_dataset("cuhk03", root, boxes="labeled")
    assert labeled.train == load_dataset("cuhk03", root).train
    doubles = load_dataset("cuhk03", make_cuhk03(tmp_path / "doubles", dtype=np.float64), boxes="labeled")
    assert rel(doubles.train, doubles.root) == rel(labeled.train, labeled.root)  # MATLAB doubles read alike


@pytest.mark.parametrize("boxes", ["labeled", "detected"])
def test_cuhk03_equals_torchreid_up_to_the_pair_in_the_camid(tmp_path, boxes):
    root = make_cuhk03(tmp_path, name=None)
    ds = load_dataset("cuhk03", root, boxes=boxes)
    expected = torchreid_form(root, boxes)
    for split in ("train", "query", "gallery"):
        ours = getattr(ds, split)
        assert [(p, pid, cam % 2) for p, pid, cam in ours] == expected[split]
        assert all(cam // 2 + 1 == int(p.rsplit("/", 1)[1][0]) for p, _, cam in ours)  # the pair


def test_cuhk03_metrics_equal_with_torchreid_camids(tmp_path):
    """Each identity lives in one pair, so pair-wise camids leave out the same gallery items."""
    ds = load_dataset("cuhk03", make_cuhk03(tmp_path))
    generator = torch.Generator().manual_seed(0)
    qf = torch.nn.functional.normalize(torch.randn(len(ds.query), 8, generator=generator), dim=1)
    gf = torch.nn.functional.normalize(torch.randn(len(ds.gallery), 8, generator=generator), dim=1)
    qp, gp = [s[1] for s in ds.query], [s[1] for s in ds.gallery]
    qc, gc = np.array([s[2] for s in ds.query]), np.array([s[2] for s in ds.gallery])
    ours = evaluate(qf, gf, qp, gp, qc, gc, max_rank=4)
    theirs = evaluate(qf, gf, qp, gp, qc % 2, gc % 2, max_rank=4)
    assert ours["mAP"] == theirs["mAP"] and list(ours["cmc"]) == list(theirs["cmc"])
    unfiltered = evaluate(qf, gf, qp, gp, np.arange(len(qc)), 100 + np.arange(len(gc)), max_rank=4)
    assert unfiltered["mAP"] != ours["mAP"]  # the test can tell camera rules apart


def test_cuhk03_layout_errors(tmp_path):
    one_line_error(lambda: load_dataset("cuhk03", tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_dataset("cuhk03", tmp_path / "empty"), tmp_path / "empty", "not a CUHK03",
                   "images_labeled", "cuhk03_new_protocol_config_labeled.mat")
    market = tmp_path / "market"
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (market / sub).mkdir(parents=True)
        (market / sub / "0001_c1s1_000001_00.jpg").write_bytes(PNG)
    one_line_error(lambda: load_dataset("cuhk03", market), market, "not a CUHK03", "images_labeled")
    root = make_cuhk03(tmp_path / "a", boxes_kinds=("labeled",), name=None)
    one_line_error(lambda: load_dataset("cuhk03", root, boxes="detected"), root, "not a CUHK03 (detected boxes)",
                   "images_detected")
    (root / "cuhk03_new_protocol_config_labeled.mat").unlink()
    one_line_error(lambda: load_dataset("cuhk03", root), root, "missing cuhk03_new_protocol_config_labeled.mat")
    (root / "cuhk03_new_protocol_config_labeled.mat").write_bytes(b"not a MATLAB file")
    one_line_error(lambda: load_dataset("cuhk03", root), "cuhk03_new_protocol_config_labeled.mat", "cannot read")


def _mat_case(tmp_path, **change):
    """A labeled tree whose .mat has ``change`` applied (names / labels / split rows / dropped keys)."""
    root = tmp_path / "cuhk03"
    files = cuhk03_files("labeled")
    (root / "images_labeled").mkdir(parents=True)
    for name, _ in files:
        (root / "images_labeled" / name).write_bytes(PNG)
    values = dict(names=[f for f, _ in files], labels=[label for _, label in files], train=[5, 6, 7, 8],
                  query=[1, 3], gallery=[2, 4])
    values.update(change)
    write_mat(root / "cuhk03_new_protocol_config_labeled.mat", **values)
    return root, root / "cuhk03_new_protocol_config_labeled.mat"


def test_cuhk03_mat_errors(tmp_path):
    root, mat = _mat_case(tmp_path, drop=("gallery_idx", "labels"))
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "missing gallery_idx, labels", "train_idx")
    root, mat = _mat_case(tmp_path / "b", query=[1, 21])
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "query_idx", "out of range", "1..20")
    root, mat = _mat_case(tmp_path / "c", train=[0, 5])
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "train_idx", "out of range")
    root, mat = _mat_case(tmp_path / "c2", train=[1.5, 5], dtype=np.float64)
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "train_idx", "integer indices")
    root, mat = _mat_case(tmp_path / "d", train=[])
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "train_idx is empty")
    root, mat = _mat_case(tmp_path / "e", labels=[1, 2, 3])
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "labels must be 20 numbers")
    names = [f for f, _ in cuhk03_files("labeled")]
    root, mat = _mat_case(tmp_path / "f", names=["person_1.png", *names[1:]])
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "entry 1", "person_1.png", "1_001_1_01.png")
    root, mat = _mat_case(tmp_path / "g")
    (root / "images_labeled" / names[4]).unlink()  # a train row's image
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "listed image", names[4], "does not exist")
    labels = [label for _, label in cuhk03_files("labeled")]
    root, mat = _mat_case(tmp_path / "h", labels=[*labels[:12], 1, 1, 1, 1, *labels[16:]],  # pair 2 person 1 -> 1
                          train=[5, 6, 7, 8, 13])
    one_line_error(lambda: load_dataset("cuhk03", root), mat, "label 1", "camera pairs 1 and 2")


def test_cuhk03_boxes_value_is_checked_at_config_time(tmp_path):
    root = make_cuhk03(tmp_path)
    one_line_error(lambda: load_dataset("cuhk03", root, boxes="foo"), "boxes='foo'", "labeled, detected", "cuhk03")
    one_line_error(lambda: load_config(overrides=["data.name=cuhk03", f"data.root={root}",
                                                  "data.options.boxes=foo"]), "boxes='foo'", "labeled, detected")
    one_line_error(lambda: load_config(overrides=["data.name=cuhk03", "data.options.box=detected"]),
                   "unknown option(s) box", "boxes")
    cfg = load_config(overrides=["data.name=cuhk03", f"data.root={root}", "data.options.boxes=detected"])
    assert cfg.data.options == {"boxes": "detected"}
    assert load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options).train[0][0].endswith(
        "images_detected/1_002_1_01.png")


# ---------------------------------------------------------------------------------------- CUHK01


def make_cuhk01(base, persons=971, name="cuhk01"):
    root = base / name if name else base
    (root / "campus").mkdir(parents=True)
    for person in range(1, persons + 1):
        for image in range(1, 5):
            (root / "campus" / f"{person:04d}{image:03d}.png").write_bytes(PNG)
    (root / "campus" / "Thumbs.db").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def cuhk01_root(tmp_path_factory):
    return make_cuhk01(tmp_path_factory.mktemp("cuhk01"))


def test_cuhk01_counts_cameras_and_ids(cuhk01_root):
    ds = load_dataset("cuhk01", cuhk01_root.parent)
    assert ds.name == "cuhk01" and ds.root == str(cuhk01_root)
    assert table_rows(ds) == {"train": (485, 1940, 2), "query": (486, 972, 1), "gallery": (486, 972, 1)}
    assert {cam for _, _, cam in ds.query} == {0} and {cam for _, _, cam in ds.gallery} == {1}
    for path, _, cam in ds.train + ds.query + ds.gallery:  # images 1-2 camera A, 3-4 camera B
        assert cam == (int(path[-7:-4]) > 2)
    assert sorted({pid for _, pid, _ in ds.train}) == list(range(485))
    train_persons = sorted({int(p[-11:-7]) for p, _, _ in ds.train})
    assert [(int(p[-11:-7]), pid) for p, pid, _ in ds.train[::4]] == list(zip(train_persons, range(485)))
    assert all(pid == int(p[-11:-7]) - 1 for p, pid, _ in ds.query + ds.gallery)  # torchreid's test ids
    assert {pid for _, pid, _ in ds.query} == {pid for _, pid, _ in ds.gallery}


def test_cuhk01_split_seeded_disjoint_and_torchreid_s(cuhk01_root):
    def persons(ds):
        train = {int(p[-11:-7]) for p, _, _ in ds.train}
        return train, {int(p[-11:-7]) for p, _, _ in ds.query + ds.gallery}

    splits = {}
    for seed in (0, 1, 7):
        train, test = persons(load_dataset("cuhk01", cuhk01_root, split_seed=seed))
        assert not train & test and train | test == set(range(1, 972)) and (len(train), len(test)) == (485, 486)
        order = np.arange(971)  # torchreid: np.random.seed(seed); np.random.shuffle(order); first 485
        np.random.RandomState(seed).shuffle(order)
        assert train == {int(i) + 1 for i in order[:485]}
        splits[seed] = train
    assert persons(load_dataset("cuhk01", cuhk01_root))[0] == splits[0]  # default seed 0, deterministic
    assert len({frozenset(s) for s in splits.values()}) == 3


def test_cuhk01_errors(tmp_path):
    one_line_error(lambda: load_dataset("cuhk01", tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_dataset("cuhk01", tmp_path / "empty"), "not a CUHK01 folder", "campus", "cuhk01")
    root = make_cuhk01(tmp_path / "a", persons=3)
    for bad, needles in [("0001005.png", ["0001005.png", "image 5", "1..4"]),
                         ("0000001.png", ["0000001.png", "person 0"]),
                         ("img_0001.png", ["img_0001.png", "0001001.png", "CUHK01"]),
                         ("00010001.png", ["00010001.png", "does not match"])]:
        (root / "campus" / bad).write_bytes(PNG)
        one_line_error(lambda: load_dataset("cuhk01", root), *needles)
        (root / "campus" / bad).unlink()
    one_line_error(lambda: load_dataset("cuhk01", root, split_seed="x"), "split_seed='x'", "integer")
    one_line_error(lambda: load_dataset("cuhk01", root, split_seed=-1), "split_seed", "-1")
    one_line_error(lambda: load_config(overrides=["data.name=cuhk01", "data.options.split_seed=abc"]),
                   "split_seed='abc'", "integer")
    assert load_config(overrides=["data.name=cuhk01", "data.options.split_seed=3"]).data.options == {"split_seed": 3}
    lone = make_cuhk01(tmp_path / "b", persons=1)
    one_line_error(lambda: load_dataset("cuhk01", lone), "1 person(s)", "at least 2")


# ---------------------------------------------------------------------------------------- check-data


class Printed:
    """The printed statistics table, read by ``table_rows`` like a dataset's."""

    def __init__(self, out):
        self.out = out

    def statistics_table(self):
        return self.out


def _run(args, capsys):
    status = main(["check-data", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_check_data_on_both_layouts(tmp_path, capsys):
    cuhk03 = make_cuhk03(tmp_path)
    status, out, _ = _run(["cuhk03", tmp_path], capsys)
    assert status == 0 and "cuhk03" in out and out.splitlines()[-1] == "20 of 20 images decode"
    status, out, _ = _run(["cuhk03", cuhk03, "boxes=detected"], capsys)
    assert status == 0 and out.splitlines()[-1] == "19 of 19 images decode"
    cuhk01 = make_cuhk01(tmp_path, persons=6, name="CUHK01")
    status, out, _ = _run(["cuhk01", tmp_path, "split_seed=2"], capsys)
    assert status == 0 and out.splitlines()[-1] == "24 of 24 images decode"
    assert table_rows(Printed(out)) == {"train": (3, 12, 2), "query": (3, 6, 1), "gallery": (3, 6, 1)}
    (cuhk01 / "campus" / "0002003.png").write_bytes(b"\x89PNG broken")
    status, out, _ = _run(["cuhk01", cuhk01], capsys)
    assert status == 1 and "unreadable: " in out and "0002003.png" in out


@pytest.mark.parametrize("args,needles", [
    (["boxes=foo"], ["boxes='foo'", "labeled, detected"]),
    (["box=detected"], ["unknown option(s) box"]),
    (["=detected"], ["'=detected'", "option=value"]),
])
def test_check_data_option_errors_exit_2(tmp_path, capsys, args, needles):
    status, out, err = _run(["cuhk03", make_cuhk03(tmp_path), *args], capsys)
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmireid: error: ")
    assert all(n in lines[0] for n in needles), lines[0]


def test_check_data_missing_boxes_exit_2(tmp_path, capsys):
    root = make_cuhk03(tmp_path, boxes_kinds=("labeled",))
    status, out, err = _run(["cuhk03", root, "boxes=detected"], capsys)
    assert status == 2 and "images_detected" in err and len(err.strip().splitlines()) == 1
