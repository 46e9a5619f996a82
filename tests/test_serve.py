"""``dmireid serve``: the Starlette app over a gallery index (TestClient), upload limits, the CLI."""

import hashlib
import io
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra (pip install dmireid[serve]) is not installed")
pytest.importorskip("python_multipart", reason="the serve extra (pip install dmireid[serve]) is not installed")
from starlette.testclient import TestClient  # noqa: E402

from dmireid.embedding.checkpoint import save_checkpoint  # noqa: E402
from dmireid.cli import main  # noqa: E402
from dmireid.embedding import FeatureExtractor  # noqa: E402
from dmireid.inference import GalleryIndex
from dmireid.serve import binding_note, is_loopback  # noqa: E402
from dmireid.serve.app import ServeSettings, create_app  # noqa: E402
from dmireid.serve.uploads import UploadError, decode_upload  # noqa: E402
from serve_fixtures import build_gallery, make_checkpoint  # noqa: E402


# ---------------------------------------------------------------- fixtures: a real index, copied per test
@pytest.fixture(scope="module")
def base_index(synthetic_root, tmp_path_factory):
    """12 gallery crops embedded by a cheap checkpoint; tests work on copies of this index."""
    folder = tmp_path_factory.mktemp("serve")
    train = sorted((synthetic_root / "bounding_box_train").glob("*.jpg"))
    checkpoint = make_checkpoint(folder / "ckpt.pt", train)
    paths = sorted(str(p) for p in (synthetic_root / "bounding_box_test").glob("*.jpg"))[:12]
    build_gallery(folder / "index", paths, checkpoint)
    return folder / "index", checkpoint, paths


@pytest.fixture(scope="module")
def query_path(synthetic_root):
    return str(sorted((synthetic_root / "query").glob("*.jpg"))[0])


def copy_index(base_index, tmp_path, threshold=None) -> Path:
    index_dir = tmp_path / "index"
    shutil.copytree(base_index[0], index_dir)
    if threshold is not None:
        GalleryIndex.open(index_dir, device="cpu").set_threshold(threshold)
    return index_dir


def make_app(index_dir, **settings):
    return create_app(lambda: GalleryIndex.open(index_dir, device="cpu"), ServeSettings(index_dir=index_dir, **settings))


@pytest.fixture(scope="module")
def client(base_index, tmp_path_factory):
    """One app for the tests that change nothing: an index copy whose threshold (1e-3) is below every
    distance between two different crops."""
    index_dir = copy_index(base_index, tmp_path_factory.mktemp("shared"), threshold=1e-3)
    with TestClient(make_app(index_dir), base_url="http://127.0.0.1:8000") as c:
        c.index_dir = index_dir
        yield c


@pytest.fixture
def own_client(base_index, tmp_path):
    """An app on this test's own copy of the index (threshold 1e-3), for tests that add to it."""
    index_dir = copy_index(base_index, tmp_path, threshold=1e-3)
    with TestClient(make_app(index_dir), base_url="http://127.0.0.1:8000") as c:
        c.index_dir = index_dir
        yield c


HIT = re.compile(r'<li class="hit[^"]*" data-id="(\d+)" data-distance="([-0-9.]+)" data-match="(\w*)"')


def hits_of(page: str):
    return [(int(i), float(d), m) for i, d, m in HIT.findall(page)]


def verdict_of(page: str) -> str:
    return re.search(r'id="verdict" class="[^"]*" data-verdict="(\w+)"', page).group(1)


def png_bytes(image: Image.Image, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kw)
    return buffer.getvalue()


def upload(client, data: bytes, name="query.png", topk=5):
    return client.post("/search", files={"image": (name, data, "image/png")}, data={"topk": str(topk)})


# ---------------------------------------------------------------- the page
def test_home_page_shows_the_form_and_the_gallery_size(client):
    r = client.get("/")
    assert r.status_code == 200 and 'id="search-form"' in r.text
    assert '<span id="gallery-count">12</span>' in r.text and "threshold 0.0010 (cosine distance" in r.text


def test_upload_ranks_the_gallery_by_cosine_distance(client, base_index, query_path):
    _, checkpoint, paths = base_index
    data = Path(query_path).read_bytes()
    r = upload(client, data, topk=5)
    assert r.status_code == 200, r.text
    hits = hits_of(r.text)
    fx = FeatureExtractor(checkpoint, device="cpu")                       # independently: 1 - <q, g>
    distances = (1 - fx(paths) @ fx([query_path])[0]).numpy()
    order = np.argsort(distances)[:5]
    index = GalleryIndex.open(client.index_dir, device="cpu")
    assert [index.image_path(i) for i, _, _ in hits] == [paths[k] for k in order]
    np.testing.assert_allclose([d for _, d, _ in hits], distances[order], atol=1e-5)
    assert verdict_of(r.text) == "unknown" and all(m == "false" for _, _, m in hits)
    assert f'name="query" value="{hashlib.sha256(data).hexdigest()}"' in r.text
    assert 'src="data:image/png;base64,' in r.text                          # the query is shown


def test_without_a_threshold_no_verdict_and_the_option_overrides_the_index(base_index, tmp_path, query_path):
    app = make_app(copy_index(base_index, tmp_path))                       # the index has no threshold
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = upload(c, Path(query_path).read_bytes())
        assert r.status_code == 200 and verdict_of(r.text) == "none" and "threshold none" in r.text
        assert len(hits_of(r.text)) == 5 and {m for _, _, m in hits_of(r.text)} == {""}
        app.state.settings.threshold = 2.0                                   # what --threshold 2 sets
        r = upload(c, Path(query_path).read_bytes())
    assert verdict_of(r.text) == "match" and "set for this server" in r.text
    assert {m for _, _, m in hits_of(r.text)} == {"true"}


def test_add_then_search_again_finds_the_query_at_distance_zero(own_client, query_path):
    client = own_client
    data = Path(query_path).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert verdict_of(upload(client, data).text) == "unknown"
    r = client.post("/add", data={"query": sha, "tag": "  visitor  1 "})
    assert r.status_code == 200, r.text
    saved = client.index_dir / "uploads" / f"{sha}.png"
    assert "added to the gallery" in r.text and saved.is_file()
    assert np.array_equal(np.asarray(Image.open(saved)), np.asarray(Image.open(query_path).convert("RGB")))
    assert '<span id="gallery-count">13</span>' in r.text
    again = upload(client, data)
    hits = hits_of(again.text)
    new_id = hits[0][0]
    assert hits[0][1] < 1e-4 and hits[0][2] == "true" and verdict_of(again.text) == "match"
    assert all(m == "false" for _, _, m in hits[1:])
    index = GalleryIndex.open(client.index_dir, device="cpu")              # the index on disk has it
    assert index.info()["count"] == 13 and index.image_path(new_id) == str(saved.resolve())
    assert "tag visitor 1" in again.text
    assert client.get(f"/image/{new_id}").content == saved.read_bytes()
    r = client.post("/add", data={"query": sha})                          # the same file twice: a no-op
    assert "already in the gallery" in r.text and '<span id="gallery-count">13</span>' in r.text


def test_add_of_an_unknown_upload_is_a_clear_400(client):
    r = client.post("/add", data={"query": "0" * 64})
    assert r.status_code == 400 and "no longer held by the server" in r.text
    r = client.post("/add", data={"query": "../../etc/passwd"})
    assert r.status_code == 400 and "names no upload" in r.text
    assert not (client.index_dir / "uploads").exists()


# ---------------------------------------------------------------- bad uploads never crash the server
def test_non_image_is_a_400_on_the_page(client):
    r = upload(client, b"#!/bin/sh\necho this is not an image\n", name="script.png")
    assert r.status_code == 400 and 'id="error"' in r.text and "not an image" in r.text
    r = upload(client, png_bytes(Image.new("RGB", (32, 64), "red"))[:60])      # a truncated PNG
    assert r.status_code == 400 and "damaged or truncated" in r.text
    r = client.post("/search", data={"topk": "3"})                            # no file at all
    assert r.status_code == 400 and "no image in the form" in r.text
    assert client.get("/").status_code == 200


def test_oversized_upload_is_a_413(client):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    data = png_bytes(noise)
    assert 50_000 < len(data) < 50_000 + 256 * 1024       # over the file limit, within the form's slack
    settings = client.app.state.settings
    settings.max_bytes, default = 50_000, settings.max_bytes
    try:
        r = upload(client, data)
        assert r.status_code == 413 and "over the limit of 48.8 KB" in r.text
        big = upload(client, b"\0" * (2 * 1024 * 1024))                        # past the form's slack too
        assert big.status_code == 413 and "the upload is 2 MB" in big.text
    finally:
        settings.max_bytes = default
    assert client.get("/").status_code == 200 and upload(client, data).status_code == 200


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of width × height pixels: a few KB that decode to width × height × 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * ((1 + (width + 7) // 8) * height), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(client):
    small = decode_upload(bomb_png(30, 20))                                    # the construction is a real PNG
    assert small.size == (30, 20) and not np.asarray(small).any()
    bomb = bomb_png(10_000, 10_000)                                             # 100 Mpx in ~13 KB
    assert len(bomb) < 100_000
    r = upload(client, bomb)
    assert r.status_code == 413 and "10000×10000 = 100,000,000 pixels" in r.text
    huge = bomb_png(15_000, 15_000)                                             # over Pillow's own guard too
    with pytest.raises(UploadError) as err:
        decode_upload(huge, max_pixels=10**12)
    assert err.value.status == 413 and "too large to decode safely" in err.value.message


def test_decode_upload_gives_rgb_of_any_mode():
    rgba = Image.fromarray(np.arange(4 * 3 * 4, dtype=np.uint8).reshape(4, 3, 4), "RGBA")
    out = decode_upload(png_bytes(rgba))
    assert out.mode == "RGB" and out.size == (3, 4)
    assert np.array_equal(np.asarray(out), np.asarray(rgba.convert("RGB")))
    with pytest.raises(UploadError, match="empty"):
        decode_upload(b"")


def test_bad_topk_is_a_400(client, query_path):
    r = upload(client, Path(query_path).read_bytes(), topk=0)
    assert r.status_code == 400 and "between 1 and 100" in r.text


# ---------------------------------------------------------------- images by id only
def test_image_route_serves_only_ids_in_the_index(client, base_index):
    path = base_index[2][3]
    first = hits_of(upload(client, Path(path).read_bytes(), topk=1).text)[0]   # a gallery crop finds itself
    assert first[1] < 1e-4 and GalleryIndex.open(client.index_dir).image_path(first[0]) == path
    r = client.get(f"/image/{first[0]}")
    assert r.status_code == 200 and r.content == Path(path).read_bytes()
    assert r.headers["content-type"] == "image/jpeg"
    r = client.get("/image/999999")
    assert r.status_code == 404 and "no gallery image with id 999999" in r.text
    assert client.get("/image/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/image/-1").status_code == 404


def test_cross_site_posts_and_foreign_hosts_are_refused(client, query_path):
    r = client.post("/search", files={"image": ("q.jpg", Path(query_path).read_bytes(), "image/jpeg")},
                    headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.text
    r = client.get("/", headers={"host": "evil.example"})                     # DNS rebinding
    assert r.status_code == 400
    ok = client.post("/search", files={"image": ("q.jpg", Path(query_path).read_bytes(), "image/jpeg")},
                     headers={"origin": "http://127.0.0.1:8000"})
    assert ok.status_code == 200


# ---------------------------------------------------------------- CLI and binding
def test_missing_extra_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install dmireid[serve]" in err and "uvicorn" in err


def test_loopback_detection_and_binding_note():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    local, note = binding_note("127.0.0.1", 8000)
    assert local and "http://127.0.0.1:8000/" in note and "this computer" in note
    local, note = binding_note("0.0.0.0", 9000)
    assert not local and "NOT a loopback" in note and "port 9000" in note


def test_serve_binds_loopback_by_default_and_warns_elsewhere(base_index, tmp_path, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    index_dir = copy_index(base_index, tmp_path)
    assert main(["serve", str(index_dir)]) == 0
    assert calls[-1][1]["host"] == "127.0.0.1" and calls[-1][1]["port"] == 8000
    err = capsys.readouterr().err
    assert "serving http://127.0.0.1:8000/ on 127.0.0.1 only" in err and "WARNING" not in err
    with TestClient(calls[-1][0], base_url="http://192.168.1.5:8000") as c:
        assert c.get("/").status_code == 400                               # not a loopback Host header
    assert main(["serve", str(index_dir), "--host", "0.0.0.0", "--port", "9001", "--max-upload-mb", "1"]) == 0
    assert calls[-1][1]["host"] == "0.0.0.0" and calls[-1][1]["port"] == 9001
    err = capsys.readouterr().err
    assert "WARNING" in err and "NOT a loopback address" in err and "port 9001" in err
    app = calls[-1][0]
    assert app.state.settings.max_bytes == 1024 * 1024
    with TestClient(app, base_url="http://192.168.1.5:9001") as c:
        assert c.get("/").status_code == 200


def test_serve_refuses_another_model_and_a_missing_index(base_index, tmp_path, capsys):
    state = torch.load(base_index[1], weights_only=True)
    next(iter(state["model"].values())).add_(1e-3)                           # other weights, same shapes
    other = tmp_path / "other.pt"
    save_checkpoint(state, other)
    assert main(["serve", str(copy_index(base_index, tmp_path)), "--checkpoint", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmireid: error:") and "\n" not in err and "other.pt" in err
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "\n" not in err
