"""IBN-ResNet-50-a: the official key/shape list, the IBN layer, both weight-file formats, ghost BN."""

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dmireid.errors import DmireidError
from dmireid.models import IBN, GhostBatchNorm2d, build_model, load_pretrained, set_bn_group_size
from dmireid.models.ibn import IBN_A_FILE_MB

torch.set_num_threads(1)

KEYS_FILE = Path(__file__).parent / "data" / "resnet50_ibn_a_keys.txt"


def official_keys() -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.split(" ", 1) for line in KEYS_FILE.read_text().splitlines() if line and not line.startswith("#")]
    return [(key, tuple(json.loads(shape))) for key, shape in rows]


@pytest.fixture(scope="module")
def ibn():
    torch.manual_seed(0)
    return build_model("resnet50_ibn_a", bn_group_size=0)  # plain BatchNorm (the 0.2 default is 64)


def test_keys_and_shapes_are_the_official_models(ibn):
    expected = [(k, s) for k, s in official_keys() if not k.startswith("fc.")]
    ours = [(k, tuple(v.shape)) for k, v in ibn.backbone.state_dict().items()]
    assert ours == expected  # same names, shapes and order
    assert [k for k, _ in official_keys() if k.startswith("fc.")] == ["fc.weight", "fc.bias"]
    assert set(ibn.state_dict()) == {"backbone." + k for k, _ in expected} | {"pool.p"} | {
        "neck." + k for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert ibn.feature_dim == 2048


def test_file_size_in_the_error_is_the_models(ibn):
    values = sum(torch.Size(s).numel() for _, s in official_keys())
    assert abs(values * 4 / 2**20 - IBN_A_FILE_MB) < 0.1


def test_ibn_layer_is_instance_norm_then_batch_norm():
    torch.manual_seed(1)
    layer = IBN(6)
    assert layer.half == 3 and layer.IN.num_features == 3 and layer.BN.num_features == 3
    with torch.no_grad():
        for p in (layer.IN.weight, layer.IN.bias, layer.BN.weight, layer.BN.bias):
            p.uniform_(0.5, 1.5)
    x = torch.randn(4, 6, 5, 3) * 3 + 1
    out = layer.train()(x)
    a = x[:, :3]
    mean, var = a.mean(dim=(2, 3), keepdim=True), a.var(dim=(2, 3), unbiased=False, keepdim=True)
    inst = (a - mean) / torch.sqrt(var + 1e-5) * layer.IN.weight.view(1, 3, 1, 1) + layer.IN.bias.view(1, 3, 1, 1)
    b = x[:, 3:]
    mean, var = b.mean(dim=(0, 2, 3), keepdim=True), b.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    batch = (b - mean) / torch.sqrt(var + 1e-5) * layer.BN.weight.view(1, 3, 1, 1) + layer.BN.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(out, torch.cat([inst, batch], 1), rtol=1e-5, atol=1e-5)
    # eval: IN still per image (no running statistics), BN from its running statistics
    layer.eval()
    one = layer(x[:1])
    torch.testing.assert_close(one[:, :3], inst[:1], rtol=1e-5, atol=1e-5)
    assert layer.IN.running_mean is None


def test_ibn_only_in_layer1_to_3_and_last_stride(ibn):
    bb = ibn.backbone
    assert all(isinstance(block.bn1, IBN) for stage in (bb.layer1, bb.layer2, bb.layer3) for block in stage)
    assert all(type(block.bn1) is nn.BatchNorm2d for block in bb.layer4)
    assert bb.layer4[0].conv2.stride == (1, 1) and bb.layer4[0].downsample[0].stride == (1, 1)
    assert bb.layer3[0].conv2.stride == (2, 2) and bb.layer3[0].conv1.stride == (1, 1)
    with torch.no_grad():
        assert bb.eval()(torch.randn(1, 3, 64, 32)).shape == (1, 2048, 4, 2)
        assert build_model("resnet50_ibn_a", last_stride=2).backbone.eval()(torch.randn(1, 3, 64, 32)).shape == (1, 2048, 2, 1)
    out = copy.deepcopy(ibn).eval()(torch.randn(2, 3, 64, 32))
    assert out.shape == (2, 2048)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def _random_official_state(ibn):
    torch.manual_seed(7)
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v.clone() for k, v in ibn.backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return state


def _assert_loaded(model, state):
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_loads_the_official_plain_state_dict(ibn, tmp_path):
    state = _random_official_state(ibn)
    torch.save(state, tmp_path / "resnet50_ibn_a-d9d0bb7b.pth")
    model = build_model("resnet50_ibn_a", pretrained=tmp_path / "resnet50_ibn_a-d9d0bb7b.pth")
    _assert_loaded(model, state)
    other = build_model("resnet50_ibn_a")
    load_pretrained(other, tmp_path / "resnet50_ibn_a-d9d0bb7b.pth")
    _assert_loaded(other, state)


def test_loads_the_cluster_contrast_pth_tar(ibn, tmp_path):
    """{"state_dict": {"module.<key>": …}, epoch, …}, legacy (pre-1.6) serialisation, no num_batches_tracked."""
    state = _random_official_state(ibn)
    wrapped = {
        "epoch": 100, "arch": "resnet50_ibn_a", "best_prec1": 77.46,
        "state_dict": {"module." + k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
    }
    path = tmp_path / "resnet50_ibn_a.pth.tar"
    torch.save(wrapped, path, _use_new_zipfile_serialization=False)
    model = build_model("resnet50_ibn_a", pretrained=str(path))
    for key, value in model.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key


def test_wrong_architecture_file_names_the_first_mismatched_key(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(DmireidError) as info:
        build_model("resnet50_ibn_a", pretrained=tmp_path / "resnet50.pth")
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "resnet50.pth") in msg and "resnet50_ibn_a" in msg
    assert "first mismatched key layer1.0.bn1.IN.weight (missing from the file)" in msg
    # and the other way round: an IBN file into a plain ResNet-50
    torch.manual_seed(0)
    torch.save(build_model("resnet50_ibn_a").backbone.state_dict(), tmp_path / "ibn.pth")
    with pytest.raises(DmireidError, match="first mismatched key layer1.0.bn1.weight") as info:
        build_model("resnet50", pretrained=tmp_path / "ibn.pth")
    assert "\n" not in str(info.value)


def test_ghost_bn_converts_every_batchnorm_and_leaves_instance_norm(ibn):
    model = copy.deepcopy(ibn)
    plain = sum(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in model.modules())
    instance = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(instance) == 13  # one per layer1-3 block
    assert set_bn_group_size(model, 2) == plain == 54  # ResNet-50's 53 (13 of them IBN's BN halves) + the neck
    assert all(type(m) is nn.InstanceNorm2d for m in instance)
    assert isinstance(model.backbone.layer1[0].bn1.BN, GhostBatchNorm2d)
    assert build_model("resnet50_ibn_a", bn_group_size=4).backbone.layer2[1].bn1.BN.group_size == 4

