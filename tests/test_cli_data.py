"""The data commands of the CLI, through ``dmireid.cli.main``: make-synthetic and check-data."""

import hashlib
import shutil
from pathlib import Path

import pytest

from dmireid.cli import main

ARGS = ["--ids", "8", "--cameras", "3", "--seed", "1", "--height", "64", "--width", "32"]
SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _kept(name: str) -> bool:
    """Market loader rule: junk (-1) is skipped everywhere, distractors (0) in train."""
    return not name.startswith("-1_")


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    from dmireid.data import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("cli_data") / "synth", num_ids=8, num_cameras=3, seed=1,
                          height=64, width=32)


def _check_data(root, capsys) -> tuple[int, list[str], str]:
    status = main(["check-data", "market1501", str(root)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def _num_images(root: Path) -> int:
    """Images check-data decodes: train without distractors, query and gallery without junk."""
    count = 0
    for split in SPLITS:
        for p in (root / split).glob("*.jpg"):
            if _kept(p.name) and not (split == "bounding_box_train" and p.name.startswith("0000_")):
                count += 1
    return count


def test_make_synthetic_writes_market_folder_deterministically(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["make-synthetic", str(first), *ARGS]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"wrote {first}"
    assert any("subset" in line and "# images" in line for line in out)
    for split in ("train", "query", "gallery"):
        assert any(line.strip().startswith(split) and line.count("|") == 3 for line in out), split
    for split in SPLITS:
        names = [p.name for p in (first / split).iterdir()]
        assert names and all(n.endswith(".jpg") and "_c" in n for n in names), split
    assert (first / "synthetic.json").is_file()

    assert main(["make-synthetic", str(second), *ARGS]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {second}"
    files_a, files_b = _files(first), _files(second)
    assert len(files_a) > 20
    assert files_a == files_b  # same names, same bytes (every image and the marker)


def test_check_data_clean_folder_exits_0(clean_root, capsys):
    status, out, _ = _check_data(clean_root, capsys)
    assert status == 0
    assert not any(line.startswith("unreadable:") for line in out)
    n = _num_images(clean_root)
    assert out[-1] == f"{n} of {n} images decode"
    assert any("subset" in line for line in out)


def test_check_data_lists_exactly_the_unreadable_files(clean_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(clean_root, root)
    gallery = sorted(p for p in (root / "bounding_box_test").glob("*.jpg") if _kept(p.name))
    truncated = gallery[len(gallery) // 2]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    pid = sorted((root / "bounding_box_train").glob("*.jpg"))[0].name[:4]
    fake = root / "bounding_box_train" / f"{pid}_c2s1_999995_00.jpg"  # a Market name, not an image
    fake.write_text("this is not a JPEG\n")
    total = _num_images(root)
    assert total == _num_images(clean_root) + 1

    status, out, _ = _check_data(root, capsys)
    assert status == 1
    reported = {}
    for line in out:
        if line.startswith("unreadable: "):
            path, reason = line[len("unreadable: "):].split(": ", 1)
            reported[Path(path).resolve()] = reason
    assert set(reported) == {truncated.resolve(), fake.resolve()}
    assert all(reason.strip() for reason in reported.values())
    assert "truncated" in reported[truncated.resolve()].lower()
    assert "identify" in reported[fake.resolve()].lower()
    assert out[-1] == f"{total - 2} of {total} images decode"


def test_check_data_missing_root_exits_2(capsys):
    status = main(["check-data", "market1501", "/nonexistent"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dmireid: error: ") and "/nonexistent" in lines[0]


def test_overrides_may_follow_options(capsys):
    # argparse alone stops collecting key=value positionals at the first option
    assert main(["train", "--config", "smoke", "--no-progress", "train.epoch=2"]) == 2
    assert "unknown config key 'train.epoch'" in capsys.readouterr().err
    assert main(["train", "--no-progress", "not-an-override"]) == 2
    assert "override 'not-an-override' is not of the form key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--quiet", "a=1", "--json", "x.json", "stray"])
    assert info.value.code == 2 and "unrecognized arguments: stray" in capsys.readouterr().err
