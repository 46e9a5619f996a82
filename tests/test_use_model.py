"""Using a trained model: FeatureExtractor, ONNX export, extract / search / cluster / visualize commands.

Everything runs on a tiny random-weight ResNet-18 at 64×32 (the smoke preset) on a few synthetic images.
"""

import csv
import html
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dmireid.cli import main
from dmireid.config import load_config
from dmireid import build
from dmireid.embedding.checkpoint import save_checkpoint
from dmireid.embedding import FeatureExtractor, collect_image_paths, extract_features, infer_resnet_arch
from dmireid.inference import renumber_by_size, write_clusters_csv
from dmireid.errors import DmireidError
from dmireid.evaluation.visualize import draw_rank_strip, plot_training_curves, rank_gallery
from model_fixtures import randomise_bn as _randomise_bn


@pytest.fixture(scope="module")
def models():
    cfg = load_config("smoke")
    torch.manual_seed(0)
    online = _randomise_bn(build.model(cfg), 1).eval()
    torch.manual_seed(1)
    momentum = _randomise_bn(build.model(cfg), 2).eval()
    return cfg, online, momentum


@pytest.fixture(scope="module")
def ckpt(models, tmp_path_factory):
    cfg, online, momentum = models
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "model": online.state_dict(),
                     "ema_model": momentum.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def images(synthetic_root, tmp_path_factory):
    """Five query images re-saved at 90×45 (PNG), so that the resize to 64×32 matters."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for src in sorted((synthetic_root / "query").glob("*.jpg"))[:5]:
        paths.append(str(folder / (src.stem + ".png")))
        Image.open(src).convert("RGB").resize((45, 90), Image.NEAREST).save(paths[-1])
    return paths


def _pils(paths):
    return [Image.open(p).convert("RGB") for p in paths]


def test_inputs_agree_and_match_evaluation_features(ckpt, models, images):
    _, _, momentum = models
    fx = FeatureExtractor(ckpt, device="cpu", batch_size=2)
    assert (fx.height, fx.width, fx.feature_dim, fx.encoder) == (64, 32, 512, "momentum")
    by_path = fx(images)
    by_pil = fx(_pils(images))
    by_array = fx([np.asarray(im) for im in _pils(images)])
    batch = torch.stack([fx.transform(im) for im in _pils(images)])
    by_tensor = fx(batch)
    assert by_path.shape == (5, 512) and by_path.dtype == torch.float32 and by_path.device.type == "cpu"
    for other in (by_pil, by_array, by_tensor):
        torch.testing.assert_close(other, by_path, atol=1e-5, rtol=0)
    torch.testing.assert_close(by_path.norm(dim=1), torch.ones(5), atol=1e-5, rtol=0)
    # the same features as evaluation computes (test transform, eval mode), and the tensor is used as is
    evaluated, ok = extract_features(momentum, [(p, 0, 0) for p in images], 64, 32, 4, "cpu", 0, progress=False)
    assert ok.all()
    torch.testing.assert_close(by_path, evaluated, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(by_tensor, F.normalize(momentum(batch), dim=1), atol=1e-5, rtol=0)
    # a single item, and an empty list
    torch.testing.assert_close(fx(images[0]), by_path[:1], atol=1e-5, rtol=0)
    assert fx([]).shape == (0, 512)


def test_flip_averaging(ckpt, models):
    _, _, momentum = models
    x = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    plain = FeatureExtractor(ckpt, device="cpu")(x)
    flipped = FeatureExtractor(ckpt, device="cpu", flip=True)(x)
    with torch.no_grad():
        expected = F.normalize(F.normalize(momentum(x), dim=1) + F.normalize(momentum(x.flip(3)), dim=1), dim=1)
    torch.testing.assert_close(flipped, expected, atol=1e-5, rtol=0)
    assert (flipped - plain).abs().max() > 1e-3
    torch.testing.assert_close(flipped.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)


def test_encoder_selection(ckpt, models, tmp_path):
    cfg, online, momentum = models
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_online, want_momentum = online(x), momentum(x)
    assert (want_online - want_momentum).abs().max() > 1e-3
    torch.testing.assert_close(FeatureExtractor(ckpt, device="cpu")(x), want_momentum, atol=1e-5, rtol=0)
    fx = FeatureExtractor(ckpt, device="cpu", encoder="online")
    assert fx.encoder == "online"
    torch.testing.assert_close(fx(x), want_online, atol=1e-5, rtol=0)
    # without a momentum encoder: online by default, momentum is an error naming the file
    no_ema = tmp_path / "cc.pt"
    save_checkpoint({"config": cfg.to_dict(), "model": online.state_dict(), "ema_model": None}, no_ema)
    assert FeatureExtractor(no_ema, device="cpu").encoder == "online"
    with pytest.raises(DmireidError, match="cc.pt holds no momentum encoder"):
        FeatureExtractor(no_ema, device="cpu", encoder="momentum")
    with pytest.raises(DmireidError, match="not one of"):
        FeatureExtractor(ckpt, encoder="ema")


def test_torchvision_weight_file(tmp_path):
    import torchvision

    torch.manual_seed(3)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    fx = FeatureExtractor(tmp_path / "resnet18.pth", device="cpu")
    assert (fx.height, fx.width, fx.feature_dim, fx.encoder, fx.config) == (256, 128, 512, "online", None)
    torch.testing.assert_close(fx.model.backbone.conv1.weight, resnet.conv1.weight)
    torch.testing.assert_close(fx.model.backbone.layer4[1].bn2.running_var, resnet.layer4[1].bn2.running_var)
    assert fx.model.backbone.layer4[0].conv1.stride == (1, 1)  # last stride 1 (spec §2)
    for arch in ("resnet18", "resnet34", "resnet50"):
        with torch.device("meta"):
            keys = dict.fromkeys(getattr(torchvision.models, arch)().state_dict())
        assert infer_resnet_arch(keys) == arch
    with torch.device("meta"):
        keys = dict.fromkeys(torchvision.models.resnet101().state_dict())
    with pytest.raises(ValueError, match="23 bottleneck blocks"):
        infer_resnet_arch(keys)


def test_unreadable_inputs_name_the_file(ckpt, tmp_path, images):
    fx = FeatureExtractor(ckpt, device="cpu")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DmireidError, match="broken.jpg") as info:
        fx([images[0], str(broken)])
    assert "\n" not in str(info.value)
    with pytest.raises(DmireidError, match="missing.jpg"):
        fx([tmp_path / "missing.jpg"])
    with pytest.raises(DmireidError, match="nothing.pt does not exist"):
        FeatureExtractor(tmp_path / "nothing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(DmireidError, match="garbage.pt"):
        FeatureExtractor(garbage)
    with pytest.raises(DmireidError, match="N×3×H×W"):
        fx(torch.zeros(3, 64, 32))
    with pytest.raises(DmireidError, match="uint8"):
        fx([np.zeros((64, 32, 3), dtype=np.float32)])
    with pytest.raises(DmireidError, match="no such file or folder"):
        collect_image_paths([tmp_path / "nope"])


def test_onnx_export_matches_pytorch_with_dynamic_batch(ckpt, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from dmireid.inference import export_onnx

    path = export_onnx(ckpt, tmp_path / "model.onnx", encoder="online")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    assert {p.key: p.value for p in proto.metadata_props}["dmireid.encoder"] == "online"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fx = FeatureExtractor(ckpt, device="cpu", encoder="online")
    for n, seed in ((1, 0), (5, 1)):
        x = torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(seed))
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (n, 512)
        np.testing.assert_allclose(got, fx(x).numpy(), atol=1e-4, rtol=0)


def test_extract_command_round_trip(ckpt, synthetic_root, tmp_path, capsys):
    out = tmp_path / "feats.npz"
    folder = synthetic_root / "query"
    assert main(["extract", str(ckpt), str(folder), "--out", str(out), "--batch-size", "7", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as data:
        paths, features = list(data["paths"]), data["features"]
    assert paths == sorted(str(p) for p in folder.glob("*.jpg"))
    assert features.dtype == np.float32 and features.shape == (len(paths), 512)
    np.testing.assert_allclose(features, FeatureExtractor(ckpt, device="cpu")(paths).numpy(), atol=1e-5)
    # a glob and a file give the same paths, duplicates dropped
    assert main(["extract", str(ckpt), str(folder / "*.jpg"), paths[0], "--out", str(out), "--quiet"]) == 0
    with np.load(out) as data:
        assert list(data["paths"]) == paths
    assert main(["extract", str(ckpt), str(tmp_path / "none"), "--out", str(out), "--quiet"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_search_command_ranks(ckpt, synthetic_root, tmp_path, capsys):
    gallery = sorted(str(p) for p in (synthetic_root / "bounding_box_test").glob("*.jpg"))[:8]
    query = gallery[3]
    assert main(["search", str(ckpt), "--query", query, "--gallery", *gallery, "--topk", "4", "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"query {query}"
    assert printed[1].split()[0] == "1" and printed[1].endswith(query) and float(printed[1].split()[1]) < 1e-4
    out = tmp_path / "results.csv"
    assert main(["search", str(ckpt), "--query", query, "--gallery", *gallery, "--topk", "4",
                 "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out)))
    fx = FeatureExtractor(ckpt, device="cpu")
    dist = (2 - 2 * fx([query]) @ fx(gallery).T)[0]
    expected = [gallery[i] for i in torch.argsort(dist)[:4]]
    assert [r["gallery"] for r in rows] == expected and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose([float(r["distance"]) for r in rows], np.sort(dist.numpy())[:4], atol=1e-5)
    # gallery features from an extract .npz give the same ranking; JSON output
    feats = tmp_path / "gallery.npz"
    assert main(["extract", str(ckpt), *gallery, "--out", str(feats), "--quiet"]) == 0
    out_json = tmp_path / "results.json"
    assert main(["search", str(ckpt), "--query", query, "--gallery", str(feats), "--topk", "4",
                 "--out", str(out_json), "--quiet"]) == 0
    saved = json.loads(out_json.read_text())
    assert [r["path"] for r in saved[0]["results"]] == expected
    assert main(["search", str(ckpt), "--query", query, "--gallery", *gallery, "--out", str(tmp_path / "r.txt"),
                 "--quiet"]) == 2
    assert ".csv or .json" in capsys.readouterr().err
    # features of another encoder are refused
    assert main(["search", str(ckpt), "--encoder", "online", "--query", query, "--gallery", str(feats),
                 "--quiet"]) == 2
    assert "extracted with the momentum encoder" in capsys.readouterr().err


def test_rank_gallery_excludes_same_pid_same_camera():
    q = torch.tensor([[1.0, 0.0]])
    g = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.0, 1.0]]), dim=1)
    pids, cams = [7, 7, 0, 8, 7], [0, 1, 2, 0, 0]
    idx, dist, match = rank_gallery(q, g, 3, [7], pids, [0], cams)
    assert idx.tolist() == [[1, 2, 3]]  # item 0 (pid 7, camera 0) left out; the distractor stays
    assert match.tolist() == [[True, False, False]]
    np.testing.assert_allclose(dist[0], (2 - 2 * g[[1, 2, 3]] @ q[0]).numpy(), atol=1e-6)
    idx, _, match = rank_gallery(q, g, 10)
    assert idx.tolist() == [[0, 1, 2, 3, 4]] and match is None


def test_cluster_command(ckpt, synthetic_root, tmp_path, capsys):
    folder = tmp_path / "crops"
    folder.mkdir()
    sources = sorted((synthetic_root / "bounding_box_test").glob("*.jpg"))
    for i, src in enumerate(sources[:3]):  # three images, four identical copies each
        for copy in range(4):
            shutil.copy(src, folder / f"img{i}_{copy}.jpg")
    shutil.copy(sources[20], folder / "single.jpg")
    out = tmp_path / "groups"
    assert main(["cluster", str(ckpt), str(folder), "--out", str(out), "--eps", "0.5", "--min-samples", "2",
                 "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "13 images" in summary
    rows = list(csv.DictReader(open(out / "clusters.csv")))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.glob("*.jpg"))
    labels = {r["path"].rsplit("/", 1)[1]: int(r["cluster"]) for r in rows}
    assert f"{sum(v < 0 for v in labels.values())} unclustered" in summary
    for i in range(3):  # identical images always share a cluster
        group = {labels[f"img{i}_{c}.jpg"] for c in range(4)}
        assert len(group) == 1 and group.pop() >= 0
    clusters = sorted({v for v in labels.values() if v >= 0})
    assert clusters == list(range(len(clusters)))
    sheets = sorted(p.name for p in out.glob("cluster_*.png"))
    assert sheets == [f"cluster_{c:04d}.png" for c in clusters]
    assert Image.open(out / sheets[0]).size[0] > 48
    # unclustered images are listed too (-1), clusters renumbered by size
    write_clusters_csv(["a", "b", "c"], renumber_by_size(np.array([-1, 5, 5])), tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text().split() == ["path,cluster", "a,-1", "b,0", "c,0"]
    assert renumber_by_size(np.array([0, 1, 1, -1, 2, 2, 2])).tolist() == [2, 1, 1, -1, 0, 0, 0]


def test_rank_strip_borders():
    strip = draw_rank_strip("missing-query.jpg", ["a.jpg", "b.jpg"], [0.1, 0.5], [True, False], thumb=(20, 40))
    pad, text_h, gap, border = 4, 14, 16, 4
    cell_w = 20 + 2 * border
    first = pad + cell_w + gap
    assert strip.getpixel((first + 1, pad + text_h + 1)) == (0, 170, 0)  # green: true match
    assert strip.getpixel((first + cell_w + pad + 1, pad + text_h + 1)) == (220, 0, 0)  # red


def test_training_curves(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"epoch": 0, "loss": 3.0, "loss_dcp": 2.0, "loss_mip": 1.0, "num_clusters": 5, "mAP": 0.2, "mAP_ema": 0.25},
             {"epoch": 1, "loss": 0.0, "skipped": True, "num_clusters": 1},
             {"epoch": 2, "loss": 2.0, "loss_dcp": 1.5, "loss_mip": 0.5, "num_clusters": 8, "mAP": 0.4}]
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n{broken\n")
    out = plot_training_curves(metrics, tmp_path / "curves.png")
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    assert len(pixels) > 600 * 300
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):  # matplotlib's C0, C1, C2 lines
        assert (pixels == colour).all(axis=1).sum() > 30
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DmireidError, match="no epoch records"):
        plot_training_curves(empty, tmp_path / "x.png")


def test_visualize_command_escapes_names(ckpt, synthetic_root, tmp_path, capsys):
    # a custom Market-layout folder and a run folder whose names need escaping in HTML
    data = tmp_path / "data & <more>"
    for split, count in (("bounding_box_train", 2), ("query", 6), ("bounding_box_test", 30)):
        (data / split).mkdir(parents=True)
        for src in sorted((synthetic_root / split).glob("*.jpg"))[:count]:
            shutil.copy(src, data / split / src.name)
    run = tmp_path / "run &<1>"
    run.mkdir()
    shutil.copy(ckpt, run / "last.pt")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "loss": 1.0, "num_clusters": 3, "mAP": 0.1}) + "\n")
    out = tmp_path / "vis"
    assert main(["visualize", str(run), "--dataset", "folder", "--root", str(data), "--out", str(out),
                 "--num-queries", "3", "--topk", "5", "--quiet"]) == 0
    strips = sorted(out.glob("query_*.png"))
    assert len(strips) == 3 and (out / "curves.png").is_file()
    page = (out / "index.html").read_text()
    assert "<more>" not in page and "&<1>" not in page
    assert html.escape(str(data)) in page and html.escape(str(run)) in page
    for strip in strips:
        assert f'href="{strip.name}"' in page
        assert Image.open(strip).size[0] > 5 * 64
    assert 'src="curves.png"' in page


def test_top_level_lazy_export():
    import dmireid

    assert dmireid.FeatureExtractor is FeatureExtractor
