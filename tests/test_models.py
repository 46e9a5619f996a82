"""dmireid.models: shapes, last stride, GeM, neck, pretrained loading, ghost BatchNorm."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dmireid.errors import DmireidError
from dmireid.models import (
    GeM,
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    ReIDModel,
    build_model,
    load_pretrained,
    set_bn_group_size,
)


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return build_model("resnet18", bn_group_size=0)  # plain BatchNorm (the default is model.bn_group_size's 64)


def test_output_shape_and_unit_rows_train_and_eval(r18):
    x = torch.randn(4, 3, 64, 32)
    model = copy.deepcopy(r18)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            out = model(x)
        assert out.shape == (4, 512) and out.dtype == torch.float32
        assert model.feature_dim == 512
        torch.testing.assert_close(out.norm(dim=1), torch.ones(4))


def test_last_stride_one_map_size(r18):
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert r18.eval().feature_map(x).shape == (1, 512, 4, 2)  # stride 16
        assert build_model("resnet18", last_stride=2).eval().feature_map(x).shape == (1, 512, 2, 1)


def test_resnet50_bottleneck_last_stride_16x8_at_256x128():
    model = build_model("resnet50", pooling="avg").eval()
    block = model.backbone.layer4[0]
    assert block.conv2.stride == (1, 1) and block.downsample[0].stride == (1, 1)
    assert block.conv1.stride == (1, 1)
    seen = {}
    model.backbone.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 128))
    assert seen["shape"] == (1, 2048, 16, 8)
    assert out.shape == (1, 2048) and model.feature_dim == 2048


def test_basicblock_last_stride_on_conv1(r18):
    block = r18.backbone.layer4[0]
    assert block.conv1.stride == (1, 1) and block.downsample[0].stride == (1, 1)


def test_gem_trainable_and_p1_is_avg():
    gem = GeM(p=3.0)
    assert gem.p.requires_grad and gem.p.item() == 3.0
    x = torch.rand(2, 5, 4, 2) + 0.1
    expected = x.pow(3).mean(dim=(2, 3), keepdim=True).pow(1 / 3)
    torch.testing.assert_close(gem(x), expected)
    gem(x).sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad).all()
    torch.testing.assert_close(GeM(p=1.0)(x), F.adaptive_avg_pool2d(x, 1))
    # negatives clamped to eps
    assert (GeM()(-torch.ones(1, 1, 2, 2)) > 0).all()


def test_pooling_options():
    assert isinstance(build_model("resnet18").pool, GeM)
    assert isinstance(build_model("resnet18", pooling="avg").pool, nn.AdaptiveAvgPool2d)
    with pytest.raises(DmireidError):
        build_model("resnet18", pooling="max")
    with pytest.raises(DmireidError, match="resnet101"):
        build_model("resnet101")


def test_neck_bias_frozen(r18):
    model = copy.deepcopy(r18).train()
    assert model.neck.bias.requires_grad is False
    assert torch.equal(model.neck.weight.detach(), torch.ones(512))
    assert torch.equal(model.neck.bias.detach(), torch.zeros(512))
    model(torch.randn(4, 3, 64, 32))[:, 0].sum().backward()
    assert model.neck.bias.grad is None
    assert model.neck.weight.grad is not None and model.backbone.conv1.weight.grad is not None
    assert model.pool.p.grad is not None


def _fake_torchvision_file(tmp_path, arch="resnet18", wrap=None):
    torch.manual_seed(123)
    state = getattr(torchvision.models, arch)().state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save({wrap: state} if wrap else state, path)
    return path, state


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_load_pretrained_from_torchvision_file(tmp_path, wrap):
    path, state = _fake_torchvision_file(tmp_path, wrap=wrap)
    model = build_model("resnet18", pretrained=path)
    loaded = model.backbone.state_dict()
    assert "fc.weight" in state and "fc.weight" not in loaded
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    # also into an existing model / bare backbone
    other = build_model("resnet18")
    load_pretrained(other.backbone, path)
    assert torch.equal(other.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_load_pretrained_without_num_batches_tracked(tmp_path):
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = build_model("resnet18")
    load_pretrained(model, tmp_path / "old.pth")
    assert torch.equal(model.backbone.bn1.running_var, state["bn1.running_var"])


def test_load_pretrained_errors_one_line(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(DmireidError, match="not found") as info:
        build_model("resnet18", pretrained=missing)
    assert "\n" not in str(info.value) and str(missing) in str(info.value)

    path, _ = _fake_torchvision_file(tmp_path, arch="resnet50")
    with pytest.raises(DmireidError) as info:
        build_model("resnet18", pretrained=path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "resnet18" in msg
    assert "layer1.0.conv1.weight" in msg or "missing keys" in msg

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(DmireidError, match="garbage.pth") as info:
        build_model("resnet18", pretrained=garbage)
    assert "\n" not in str(info.value)


def test_load_pretrained_shape_mismatch(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(DmireidError, match="conv1.weight"):
        build_model("resnet18", pretrained=tmp_path / "bad.pth")


def test_ghost_bn_keeps_state_dict_keys_and_params(r18):
    model = copy.deepcopy(r18)
    keys = list(model.state_dict())
    params = list(model.parameters())
    count = sum(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in model.modules())
    assert set_bn_group_size(model, 2) == count == 21  # 20 in resnet18 + the neck
    assert isinstance(model.backbone.bn1, GhostBatchNorm2d) and isinstance(model.neck, GhostBatchNorm1d)
    assert list(model.state_dict()) == keys and list(model.parameters()) == params
    assert model.neck.bias.requires_grad is False
    model.load_state_dict(r18.state_dict())  # plain checkpoints load
    set_bn_group_size(model, 0)
    assert type(model.backbone.bn1) is nn.BatchNorm2d and type(model.neck) is nn.BatchNorm1d
    m2 = build_model("resnet18", bn_group_size=4)
    assert m2.backbone.layer3[0].bn2.group_size == 4


def _randomise_affine(bn):
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)


@pytest.mark.parametrize("dim", [1, 2])
def test_ghost_bn_group_equals_batch_is_plain(dim):
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3) if dim == 2 else nn.BatchNorm1d(3)
    _randomise_affine(plain)
    ghost = copy.deepcopy(plain)
    set_bn_group_size(ghost, 8)
    x = torch.randn(8, 3, 4, 2) if dim == 2 else torch.randn(8, 3)
    torch.testing.assert_close(ghost(x), plain(x))
    torch.testing.assert_close(ghost.running_mean, plain.running_mean)
    torch.testing.assert_close(ghost.running_var, plain.running_var)


@pytest.mark.parametrize("shape,group", [((16, 3, 4, 2), 4), ((16, 5), 4), ((10, 3, 4, 2), 4), ((11, 5), 4)])
def test_ghost_bn_groups_equal_separate_plain_bn(shape, group):
    torch.manual_seed(1)
    plain = nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1])
    plain.momentum = 0.3
    _randomise_affine(plain)
    ghost = copy.deepcopy(plain)
    set_bn_group_size(ghost, group)
    x = torch.randn(*shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    upstream = torch.randn(*shape)

    out = ghost(x)
    (out * upstream).sum().backward()

    chunks = list(torch.split(x_ref, group))  # groups of G plus the remainder
    copies = [copy.deepcopy(plain) for _ in chunks]
    ref = torch.cat([bn(c) for bn, c in zip(copies, chunks)])
    (ref * upstream).sum().backward()

    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ghost.weight.grad, sum(bn.weight.grad for bn in copies))
    torch.testing.assert_close(ghost.bias.grad, sum(bn.bias.grad for bn in copies))
    # running stats = mean over groups of the per-group updated running stats
    torch.testing.assert_close(ghost.running_mean, torch.stack([bn.running_mean for bn in copies]).mean(0))
    torch.testing.assert_close(ghost.running_var, torch.stack([bn.running_var for bn in copies]).mean(0))
    assert int(ghost.num_batches_tracked) == 1

    # eval mode: running statistics, no grouping
    ghost.eval()
    ref_eval = copy.deepcopy(ghost)
    set_bn_group_size(ref_eval, 0)
    torch.testing.assert_close(ghost(x.detach()), ref_eval(x.detach()))


def test_ghost_bn_momentum_none_cumulative():
    torch.manual_seed(2)
    plain = nn.BatchNorm1d(3, momentum=None)
    ghost = copy.deepcopy(plain)
    set_bn_group_size(ghost, 2)
    x = torch.randn(4, 3)
    ghost(x)
    ghost(x)
    a, b = copy.deepcopy(plain), copy.deepcopy(plain)
    a(x[:2]), b(x[2:]), a(x[:2]), b(x[2:])
    torch.testing.assert_close(ghost.running_mean, (a.running_mean + b.running_mean) / 2)


def test_ghost_bn_model_trains_and_grads_flow():
    torch.manual_seed(3)
    model = build_model("resnet18", bn_group_size=2).train()
    out = model(torch.randn(4, 3, 64, 32))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    out[:, :8].sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    assert isinstance(model, ReIDModel)


def test_ghost_bn_channels_last_kept():
    torch.manual_seed(4)
    bn = nn.BatchNorm2d(3)
    set_bn_group_size(bn, 2)
    x = torch.randn(4, 3, 4, 2)
    ref = copy.deepcopy(bn)(x)
    out = bn(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref)


def test_ghost_bn_leaves_unknown_subclasses_with_a_warning(caplog):
    from dmireid.models import GhostBatchNormMixin, register_ghost_class

    class MyBN(nn.BatchNorm2d):
        pass

    net = nn.Sequential(nn.BatchNorm2d(3), MyBN(3), nn.InstanceNorm2d(3), nn.LayerNorm(3), nn.GroupNorm(1, 3))
    with caplog.at_level("WARNING", logger="dmireid.models.ghost_bn"):
        assert set_bn_group_size(net, 2) == 1
    assert any("MyBN" in r.getMessage() for r in caplog.records)
    assert [type(m) for m in net] == [GhostBatchNorm2d, MyBN, nn.InstanceNorm2d, nn.LayerNorm, nn.GroupNorm]

    class GhostMyBN(GhostBatchNormMixin, MyBN):
        pass

    register_ghost_class(MyBN, GhostMyBN)
    assert set_bn_group_size(net, 2) == 2 and type(net[1]) is GhostMyBN
    assert set_bn_group_size(net, 0) == 2 and type(net[1]) is MyBN
    with pytest.raises(TypeError):
        register_ghost_class(nn.BatchNorm1d, GhostBatchNorm2d)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50_ibn_a", "timm:test_efficientnet"])
def test_ghost_bn_model_equals_separate_groups(arch):
    """Train-mode forward with group G == the plain model run on each group of G images alone
    (IBN: its BN halves grouped, IN per image; timm: BatchNormAct2d grouped, activation kept)."""
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(3)
    plain = build_model(arch, last_stride=2 if arch.startswith("timm:") else 1).train()
    ghost = copy.deepcopy(plain)
    set_bn_group_size(ghost, 2)
    x = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        out = ghost(x)
        ref = torch.cat([copy.deepcopy(plain)(x[:2]), copy.deepcopy(plain)(x[2:])])
        whole = copy.deepcopy(plain)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out, whole, rtol=1e-4, atol=1e-4)  # grouping changes the result
