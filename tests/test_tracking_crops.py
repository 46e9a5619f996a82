"""Synthetic clips, ``dmireid crops`` (MOT tracks -> crops + manifest) and the ``tracklets`` dataset."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from dmireid.cli import main
from dmireid.data import load_dataset
from dmireid.data.synthetic_video import render_clip, write_labelled_crops
from dmireid.errors import DmireidError
from dmireid.inference.footage import clip_boxes, cut_crops, read_mot_tracks, spread_indices

from tracking_fixtures import clips  # noqa: F401  (fixture)


def manifest(folder):
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_clip_is_deterministic_and_boxes_lie_in_the_frame(clips):  # noqa: F811
    clip, folder = clips[1]
    again = render_clip(site_seed=0, scene_seed=1, camera=1, frames=30, people=5)
    assert np.array_equal(clip.frames, again.frames) and np.array_equal(clip.gt, again.gt)
    H, W = clip.frames.shape[1:3]
    frame, pid, left, top, width, height, vis = clip.gt.T
    assert (left >= 0).all() and (top >= 0).all() and (left + width <= W).all() and (top + height <= H).all()
    assert (vis >= 0.35).all() and (vis <= 1).all()
    # one box per person and frame; camera 2 films the same people (a scene is shared by the cameras)
    assert len({(int(f), int(p)) for f, p in zip(frame, pid)}) == len(clip.gt)
    assert set(np.unique(pid)) == set(np.unique(clips[2][0].gt[:, 1]))
    # the ground-truth file says what the array says
    rows = read_mot_tracks(folder / "gt" / "gt.txt")
    assert np.allclose(rows[:, :6], clip.gt[:, :6])
    assert sorted(p.name for p in (folder / "img1").iterdir())[:2] == ["000001.jpg", "000002.jpg"]


def test_spread_and_clip_by_hand():
    assert spread_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert spread_indices(3, 5).tolist() == [0, 1, 2]
    boxes = clip_boxes([[-10, 5, 30, 50], [300, 150, 40, 40], [400, 10, 5, 5]], 160, 320, pad=0.0)
    assert boxes.tolist() == [[0, 5, 20, 55], [300, 150, 320, 160], [320, 10, 320, 15]]
    # pad 0.1: 3 px on each side of a 30-wide box, 5 px above and below a 50-high one
    assert clip_boxes([[40, 20, 30, 50]], 160, 320, pad=0.1).tolist() == [[37, 15, 73, 75]]


def test_crops_names_manifest_every_and_limit(clips, tmp_path):  # noqa: F811
    clip, folder = clips[1]
    report = cut_crops(folder / "img1", folder / "gt" / "gt.txt", 1, tmp_path / "crops", every=3, max_per_track=4)
    rows = manifest(tmp_path / "crops")
    gt = clip.gt[(clip.gt[:, 0].astype(int) - 1) % 3 == 0]
    expected = sum(min(4, int((gt[:, 1] == pid).sum())) for pid in np.unique(gt[:, 1]))
    assert report.written == len(rows) == expected
    assert report.skipped_every == len(clip.gt) - len(gt) and report.over_limit == len(gt) - expected
    for row in rows:
        assert row["path"] == f"c1_t{int(row['track']):06d}_f{int(row['frame']):06d}.jpg"
        assert (int(row["frame"]) - 1) % 3 == 0
        with Image.open(tmp_path / "crops" / row["path"]) as image:
            assert image.size == (int(row["width"]), int(row["height"]))
    # a track's crops spread over its kept frames: its first and last kept frames are there
    pid = int(gt[0, 1])
    frames = sorted(int(r["frame"]) for r in rows if int(r["track"]) == pid)
    kept = sorted(gt[gt[:, 1] == pid, 0].astype(int).tolist())
    assert frames[0] == kept[0] and frames[-1] == kept[-1]


def test_crops_clip_at_the_edge_pad_min_height_and_missing_frames(clips, tmp_path):  # noqa: F811
    clip, folder = clips[1]
    frames = tmp_path / "img1"
    shutil.copytree(folder / "img1", frames)
    (frames / "000003.jpg").unlink()
    tracks = tmp_path / "tracks.txt"
    tracks.write_text("1,7,-10,5,30,50,0.9,-1,-1,-1\n"      # partly left of the frame
                      "2,7,400,10,20,60,0.8\n"              # entirely outside
                      "3,7,10,10,20,60,0.7\n"               # frame 3 has no image
                      "4,7,10,10,20,20,0.6\n"               # too low for --min-height 30
                      "5,7,50,40,20,40,0.5\n")
    report = cut_crops(frames, tracks, 2, tmp_path / "crops", min_height=30, pad=0.0)
    assert (report.written, report.outside, report.missing_boxes, report.missing_frames, report.too_small) == \
        (2, 1, 1, [3], 1)
    rows = {r["frame"]: r for r in manifest(tmp_path / "crops")}
    assert [rows["1"][k] for k in ("left", "top", "width", "height", "conf")] == ["0", "5", "20", "50", "0.9"]
    with Image.open(tmp_path / "crops" / "c2_t000007_f000001.jpg") as image:
        crop = np.asarray(image.convert("RGB"), np.float64)
    with Image.open(frames / "000001.jpg") as image:
        region = np.asarray(image.convert("RGB"), np.float64)[5:55, 0:20]
    assert crop.shape == region.shape and np.abs(crop - region).mean() < 4  # JPEG re-encoding only
    assert "frames without an image" in report.summary()


def test_malformed_line_is_one_error_naming_file_and_line(clips, tmp_path):  # noqa: F811
    _, folder = clips[1]
    tracks = tmp_path / "tracks.txt"
    tracks.write_text("1,1,10,10,20,40,1\n2,1,ten,10,20,40,1\n")
    with pytest.raises(DmireidError, match=r"tracks.txt:2: expected 'frame, id, left, top, width, height"):
        cut_crops(folder / "img1", tracks, 1, tmp_path / "crops")
    tracks.write_text("1,1,10,10,20\n")
    with pytest.raises(DmireidError, match=r"tracks.txt:1:"):
        read_mot_tracks(tracks)
    assert not (tmp_path / "crops").exists()


def test_two_cameras_share_a_folder_and_a_second_run_refuses(clips, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "crops"
    for camera in (1, 2):
        _, folder = clips[camera]
        assert main(["crops", str(folder / "img1"), "--tracks", str(folder / "gt" / "gt.txt"), "--camera",
                     str(camera), "--out", str(out), "--every", "5", "--max-per-track", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    rows = manifest(out)
    assert {r["camera"] for r in rows} == {"1", "2"}
    assert sorted(r["path"] for r in rows) == sorted(p.name for p in out.glob("*.jpg"))
    _, folder = clips[2]
    args = ["crops", str(folder / "img1"), "--tracks", str(folder / "gt" / "gt.txt"), "--camera", "2", "--out", str(out)]
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(args + ["--replace", "--every", "10"]) == 0
    rows = manifest(out)
    assert all((int(r["frame"]) - 1) % 10 == 0 for r in rows if r["camera"] == "2")
    assert sorted(r["path"] for r in rows) == sorted(p.name for p in out.glob("*.jpg"))  # the old ones are gone
    assert main(args + ["--append"]) == 2  # same track ids and frames: refused before writing
    assert "already exists" in capsys.readouterr().err


def test_crops_from_a_video_file(clips, tmp_path):  # noqa: F811
    cv2 = pytest.importorskip("cv2", reason="the video path needs a decoder (opencv-python or PyAV)")
    clip, folder = clips[1]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, clip.frames.shape[2:0:-1])
    for frame in clip.frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    from_video = cut_crops(video, folder / "gt" / "gt.txt", 1, tmp_path / "a", every=7)
    from_frames = cut_crops(folder / "img1", folder / "gt" / "gt.txt", 1, tmp_path / "b", every=7)
    assert from_video.written == from_frames.written > 0 and not from_video.missing_frames
    name = manifest(tmp_path / "a")[0]["path"]
    a = np.asarray(Image.open(tmp_path / "a" / name), np.float64)
    b = np.asarray(Image.open(tmp_path / "b" / name), np.float64)
    assert a.shape == b.shape and np.abs(a - b).mean() < 8  # two lossy codecs, same pixels


def test_tracklets_dataset(clips, tmp_path):  # noqa: F811
    out = tmp_path / "crops"
    for camera in (1, 2):
        clip, folder = clips[camera]
        cut_crops(folder / "img1", folder / "gt" / "gt.txt", camera, out, every=4)
    ds = load_dataset("tracklets", out)
    rows = sorted(manifest(out), key=lambda r: r["path"])
    assert [p.split("/")[-1] for p, _, _ in ds.train] == [r["path"] for r in rows]
    assert all(pid == -1 for _, pid, _ in ds.train)
    assert [cam for _, _, cam in ds.train] == [int(r["camera"]) - 1 for r in rows]
    assert ds.train_frames == [int(r["frame"]) for r in rows]
    keys = sorted({(int(r["camera"]), int(r["track"])) for r in rows})
    assert ds.train_tracklets == [keys.index((int(r["camera"]), int(r["track"]))) for r in rows]
    assert not ds.query and ds.num_cameras == 2
    write_labelled_crops([clips[1][0], clips[2][0]], tmp_path / "test")
    ds = load_dataset("tracklets", out, test_root=str(tmp_path / "test"))
    assert ds.query and ds.gallery and {pid for _, pid, _ in ds.query} <= {pid for _, pid, _ in ds.gallery}
    (out / "holiday.jpg").write_bytes(b"")
    with pytest.raises(DmireidError, match="holiday.jpg: file name does not match c<camera>_t<track>_f<frame>"):
        load_dataset("tracklets", out)
