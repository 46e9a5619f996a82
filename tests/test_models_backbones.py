"""dmireid.models: the backbone registry, dmireid.build.model (a config's model), model.pretrained (none/imagenet/path)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from dmireid import build
from dmireid.config import load_config
from dmireid.errors import DmireidError
from dmireid.models import BACKBONES, GeM, build_model, normalise_pretrained, register_backbone

torch.set_num_threads(1)


class TinyMapNet(nn.Module):
    """B×3×H×W -> B×width×H/4×W/4."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=4, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.out_channels = width

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TinyVectorNet(nn.Module):
    """B×3×H×W -> B×width (mean colour through a linear layer): a vector backbone."""

    output_kind = "vector"

    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(3, width)
        self.out_channels = width

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def tiny_map(name, pretrained, last_stride, width=8):
    net = TinyMapNet(width)
    net.seen = {"name": name, "pretrained": pretrained, "last_stride": last_stride}
    if pretrained is not None:
        net.load_state_dict(torch.load(pretrained, weights_only=True))
    return net


def tiny_vector(name, pretrained, last_stride, width=6, img_size=None):
    net = TinyVectorNet(width)
    net.img_size = img_size
    return net


register_backbone("test_tiny_map", tiny_map, overwrite=True)
register_backbone("test_tiny_vector", tiny_vector, overwrite=True)
register_backbone("testprefix:", tiny_map, overwrite=True)


def test_builtin_backbones_are_registered():
    assert {"resnet18", "resnet34", "resnet50", "resnet50_ibn_a", "timm:"} <= set(BACKBONES.names())
    assert "timm:anything" in BACKBONES and "resnet101" not in BACKBONES


def test_unknown_arch_is_one_line_naming_the_key_and_known_names():
    with pytest.raises(DmireidError) as info:
        build_model("resnet101")
    msg = str(info.value)
    assert "\n" not in msg and "model.arch" in msg and "resnet101" in msg and "resnet50_ibn_a" in msg


def test_plugin_map_backbone_gets_options_and_is_pooled():
    torch.manual_seed(0)
    model = build_model("test_tiny_map", width=5, last_stride=2).eval()
    assert model.feature_dim == 5 and isinstance(model.pool, GeM)
    assert model.backbone.seen == {"name": "test_tiny_map", "pretrained": None, "last_stride": 2}
    x = torch.rand(3, 3, 16, 8)
    with torch.no_grad():
        out = model(x)
        fmap = model.backbone(x)
        pooled = fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        expected = torch.nn.functional.normalize(model.neck(pooled), dim=1)
    torch.testing.assert_close(out, expected)


def test_prefix_entry_gets_the_full_name():
    model = build_model("testprefix:abc")
    assert model.backbone.seen["name"] == "testprefix:abc"


def test_vector_backbone_goes_straight_to_the_neck():
    torch.manual_seed(0)
    model = build_model("test_tiny_vector", pooling="gem").eval()
    assert isinstance(model.pool, nn.Identity) and "pool.p" not in model.state_dict()
    x = torch.rand(4, 3, 8, 4)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.neck(model.backbone.fc(x.mean(dim=(2, 3)))), dim=1)
        torch.testing.assert_close(model(x), expected)
    assert model(x).shape == (4, 6)


def test_unknown_option_and_bad_factory_output_are_one_line():
    with pytest.raises(DmireidError, match="model.options") as info:
        build_model("test_tiny_map", depth=3)
    assert "\n" not in str(info.value) and "depth" in str(info.value)
    with pytest.raises(DmireidError, match="model.options"):
        build_model("test_tiny_map", pretrained=None, last_stride=1, name="x")

    register_backbone("test_no_channels", lambda name, pretrained, last_stride: nn.ReLU(), overwrite=True)
    with pytest.raises(DmireidError, match="out_channels") as info:
        build_model("test_no_channels")
    assert "\n" not in str(info.value)


def test_register_twice_needs_overwrite():
    register_backbone("test_once", tiny_map, overwrite=True)
    with pytest.raises(DmireidError, match="already registered"):
        register_backbone("test_once", tiny_vector)
    assert register_backbone("test_once", tiny_map) is tiny_map  # same object again: fine


def _cfg(*overrides):
    return load_config(None, ["model.arch=test_tiny_map", "model.pooling=avg", "model.bn_group_size=2",
                              "data.height=64", "data.width=32", *overrides])


def test_the_config_model_gets_its_settings_options_and_the_data_size():
    model = build.model(_cfg())
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d) and model.backbone.bn.group_size == 2
    assert build.model(_cfg(), for_inference=True).backbone.bn.group_size == 0  # a checkpoint's: plain BN
    model = build.model(_cfg("model.options.width=3"))
    assert model.feature_dim == 3
    # img_size follows the data size for a factory that takes it, unless options set it
    assert build.model(_cfg("model.arch=test_tiny_vector")).backbone.img_size == [64, 32]
    vec = build.model(_cfg("model.arch=test_tiny_vector", "model.options.img_size=[8,8]"))
    assert vec.backbone.img_size == [8, 8]
    assert build.model(_cfg()).feature_dim == 8  # tiny_map takes no img_size
    with pytest.raises(DmireidError, match="model.options: expected a mapping"):
        _cfg("model.options=[1, 2]")


def test_the_config_model_matches_build_model_bitwise():
    cfg = load_config(None, ["model.arch=resnet18", "model.pretrained=none", "model.bn_group_size=0"])
    torch.manual_seed(5)
    a = build.model(cfg).state_dict()
    torch.manual_seed(5)
    b = build_model("resnet18", bn_group_size=0).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value", [None, False, "", "none", "None", "NONE", " none "])
def test_pretrained_none_forms(value):
    assert normalise_pretrained(value) is None


def test_pretrained_imagenet_and_path_forms(tmp_path):
    assert normalise_pretrained("ImageNet") == "imagenet"
    assert normalise_pretrained(tmp_path / "w.pth") == tmp_path / "w.pth"
    assert normalise_pretrained(str(tmp_path / "w.pth")) == tmp_path / "w.pth"
    with pytest.raises(DmireidError, match="model.pretrained"):
        normalise_pretrained(3)


def test_pretrained_string_none_is_random_init():
    torch.manual_seed(1)
    a = build_model("resnet18", pretrained="None").state_dict()
    torch.manual_seed(1)
    b = build_model("resnet18", pretrained=None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- model.pretrained=imagenet through the torch hub cache (never the network) ----

@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """A fresh torch hub folder ($TORCH_HOME/hub); any download attempt fails like an offline machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # as if torch.hub.set_dir was never called
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert Path(torch.hub.get_dir()) / "checkpoints" == folder
    return SimpleNamespace(folder=folder, calls=calls)


def small_state_file(path: Path, state: dict) -> dict:
    """Save ``state`` with every tensor a stride-0 view of one value (a few KB on disk); return the values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    small = {}
    for i, (key, value) in enumerate(state.items()):
        fill = torch.full((1,), float(i % 97) / 97, dtype=value.dtype) if value.is_floating_point() else value.reshape(-1)[:1]
        small[key] = fill.expand(value.shape) if value.dim() else fill.reshape(())
    torch.save(small, path)
    assert path.stat().st_size < 1_000_000
    return small


def test_imagenet_from_hub_cache_without_network(hub_dir):
    state = torchvision.models.resnet18().state_dict()
    saved = small_state_file(hub_dir.folder / "resnet18-f37072fd.pth", state)
    model = build_model("resnet18", pretrained="imagenet")
    assert hub_dir.calls == []
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, saved[key].expand_as(value)), key
    assert "fc.weight" in saved and "fc.weight" not in model.backbone.state_dict()


def test_imagenet_offline_is_one_line_naming_file_size_folder(hub_dir):
    with pytest.raises(DmireidError) as info:
        build_model("resnet50", pretrained="IMAGENET")
    msg = str(info.value)
    assert "\n" not in msg
    assert "resnet50-0676ba61.pth" in msg and "97.8 MB" in msg and str(hub_dir.folder) in msg
    assert "model.pretrained" in msg and "Temporary failure" in msg
    url, dst, hash_prefix = hub_dir.calls[0]
    assert url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert Path(dst) == hub_dir.folder / "resnet50-0676ba61.pth" and hash_prefix == "0676ba61"


def test_imagenet_download_lands_in_hub_cache_then_loads(hub_dir, monkeypatch):
    state = torchvision.models.resnet34().state_dict()

    def fake_download(url, dst, hash_prefix=None, progress=True):
        small_state_file(Path(dst), state)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = build_model("resnet34", pretrained="imagenet")
    assert (hub_dir.folder / "resnet34-b627a593.pth").is_file()
    assert torch.equal(model.backbone.conv1.weight.detach(), torch.zeros(64, 3, 7, 7))  # key 0 -> value 0/97
    assert torch.allclose(model.backbone.bn1.weight, torch.full((64,), 1 / 97))


def test_ibn_imagenet_looks_for_the_official_file(hub_dir):
    with pytest.raises(DmireidError) as info:
        build_model("resnet50_ibn_a", pretrained="imagenet")
    msg = str(info.value)
    assert "\n" not in msg and "resnet50_ibn_a-d9d0bb7b.pth" in msg and "97.7 MB" in msg and str(hub_dir.folder) in msg
    assert hub_dir.calls[0][0] == "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth"


def test_timm_arch_without_timm_installed_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(DmireidError, match=r"pip install 'dmireid\[timm\]'") as info:
        build_model("timm:resnet10t")
    assert "\n" not in str(info.value)
