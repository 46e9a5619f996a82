"""timm backbones (model.arch=timm:NAME): CNN maps, ViT tokens, last stride, ghost BN, local weight files."""

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dmireid.errors import DmireidError
from dmireid.models import GeM, GhostBatchNorm2d, build_model, set_bn_group_size

timm = pytest.importorskip("timm")
from timm.layers import BatchNormAct2d  # noqa: E402

torch.set_num_threads(1)

VIT = "timm:vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_model("timm:resnet10t")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_model(VIT, img_size=[64, 32])


def test_cnn_gives_pooled_unit_features(cnn):
    assert cnn.feature_dim == 512 and isinstance(cnn.pool, GeM) and cnn.backbone.output_kind == "map"
    assert all(k.startswith(("backbone.body.", "pool.", "neck.")) for k in cnn.state_dict())
    x = torch.randn(3, 3, 64, 32)
    model = copy.deepcopy(cnn).eval()
    with torch.no_grad():
        out = model(x)
        fmap = model.backbone.body.forward_features(x)
        expected = F.normalize(model.neck(model.pool(fmap).flatten(1)), dim=1)
    assert out.shape == (3, 512)
    torch.testing.assert_close(out, expected)


def test_cnn_last_stride_is_output_stride_16(cnn):
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert cnn.eval().feature_map(x).shape == (1, 512, 4, 2)  # stride 16
        assert build_model("timm:resnet10t", last_stride=2).eval().feature_map(x).shape == (1, 512, 2, 1)


def test_cnn_ghost_bn_covers_every_batchnorm(cnn):
    model = copy.deepcopy(cnn)
    count = sum(type(m) is nn.BatchNorm2d for m in model.modules()) + 1  # + the neck
    assert set_bn_group_size(model, 2) == count == 15  # deep stem 3, 4 blocks × 2, 3 downsamples, neck
    assert isinstance(model.backbone.body.bn1, GhostBatchNorm2d)


def test_ghost_batchnormact_keeps_activation_and_equals_separate_groups():
    torch.manual_seed(1)
    plain = BatchNormAct2d(5, act_layer=nn.ReLU)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    ghost = copy.deepcopy(plain)
    assert set_bn_group_size(ghost, 3) == 1 and isinstance(ghost, BatchNormAct2d)
    x = torch.randn(7, 5, 4, 2, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = ghost(x)
    copies = [copy.deepcopy(plain) for _ in range(3)]
    ref = torch.cat([bn(chunk) for bn, chunk in zip(copies, torch.split(x_ref, 3))])
    assert (out >= 0).all() and (out == 0).any()  # the ReLU is still applied
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ghost.running_mean, torch.stack([bn.running_mean for bn in copies]).mean(0))
    set_bn_group_size(ghost, 0)
    assert type(ghost) is BatchNormAct2d


def test_efficientnet_ghost_bn_covers_batchnormact():
    model = build_model("timm:test_efficientnet", last_stride=2)
    norms = [m for m in model.modules() if isinstance(m, BatchNormAct2d)]
    assert len(norms) > 5 and set_bn_group_size(model, 2) == len(norms) + 1  # + the neck


def test_vit_gives_the_cls_token_into_the_neck(vit):
    assert vit.backbone.output_kind == "vector" and isinstance(vit.pool, nn.Identity)
    assert vit.feature_dim == 192 and vit.backbone.body.pos_embed.shape == (1, 1 + 4 * 2, 192)
    model = copy.deepcopy(vit).eval()
    x = torch.randn(2, 3, 64, 32)  # not square
    with torch.no_grad():
        tokens = model.backbone.body.forward_features(x)  # B×(1+8)×192, after the final LayerNorm
        torch.testing.assert_close(model.backbone(x), tokens[:, 0])
        torch.testing.assert_close(model(x), F.normalize(model.neck(tokens[:, 0]), dim=1))
    assert model(x).shape == (2, 192)


def test_vit_avg_token_pool_averages_patch_tokens():
    torch.manual_seed(0)
    model = build_model(VIT, img_size=[64, 32], token_pool="avg").eval()
    cls_model = build_model(VIT, img_size=[64, 32], token_pool="cls")
    assert list(model.state_dict()) == list(cls_model.state_dict())  # one weight file serves both
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        tokens = model.backbone.body.forward_features(x)  # after the final LayerNorm
        torch.testing.assert_close(model.backbone(x), tokens[:, 1:].mean(dim=1))
    with pytest.raises(DmireidError, match="token_pool"):
        build_model(VIT, img_size=[64, 32], token_pool="max")
    with pytest.raises(DmireidError, match="token models"):
        build_model("timm:resnet10t", token_pool="cls")


def test_vit_ignores_last_stride_with_a_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="dmireid.models.timm_backbone"):
        build_model(VIT, img_size=[64, 32], last_stride=1)
    assert any("last_stride=1 ignored" in r.getMessage() for r in caplog.records)


def test_vit_ghost_bn_leaves_layernorm(vit):
    model = copy.deepcopy(vit)
    before = [type(m) for m in model.backbone.modules()]
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 2 * 12 + 1
    assert set_bn_group_size(model, 2) == 1  # the neck only
    assert [type(m) for m in model.backbone.modules()] == before


def test_vit_wrong_input_size_is_one_line(vit):
    with pytest.raises(DmireidError, match=r"model.options.img_size=\[128, 64\]") as info:
        copy.deepcopy(vit).eval()(torch.randn(1, 3, 128, 64))
    assert "\n" not in str(info.value)


def test_unknown_timm_model_and_bad_option_are_one_line():
    with pytest.raises(DmireidError, match="no model 'nonexistent_net'"):
        build_model("timm:nonexistent_net")
    with pytest.raises(DmireidError, match="model.options for timm:resnet10t") as info:
        build_model("timm:resnet10t", not_an_option=1)
    assert "\n" not in str(info.value)
    with pytest.raises(DmireidError, match="downloads no timm weights"):
        build_model("timm:resnet10t", pretrained="imagenet")


def _timm_state(name, **kwargs):
    torch.manual_seed(9)
    return timm.create_model(name, pretrained=False, **kwargs).state_dict()  # with its classifier


def test_cnn_loads_pth_and_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = _timm_state("resnet10t", num_classes=10)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "r10t.pth.tar")
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r10t.safetensors"))
    for path in (tmp_path / "r10t.pth.tar", tmp_path / "r10t.safetensors"):
        model = build_model("timm:resnet10t", pretrained=path)
        loaded = model.backbone.body.state_dict()
        assert "fc.weight" in state and "fc.weight" not in loaded
        assert all(torch.equal(v, state[k]) for k, v in loaded.items()), path


def test_wrong_weight_file_is_one_line_naming_the_first_mismatched_key(tmp_path):
    torch.save(_timm_state("resnet18"), tmp_path / "r18.pth")
    with pytest.raises(DmireidError) as info:
        build_model("timm:resnet10t", pretrained=tmp_path / "r18.pth")
    msg = str(info.value)
    assert "\n" not in msg and "first mismatched key" in msg and "timm:resnet10t" in msg and "r18.pth" in msg
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(DmireidError, match="junk.pth") as info:
        build_model("timm:resnet10t", pretrained=tmp_path / "junk.pth")
    assert "\n" not in str(info.value)


def test_vit_224_file_is_resized_to_the_model_grid(tmp_path):
    state = _timm_state("vit_tiny_patch16_224", num_classes=5)  # 14×14 grid, square
    torch.save(state, tmp_path / "vit224.pth")
    model = build_model(VIT, img_size=[64, 32], pretrained=tmp_path / "vit224.pth")
    body = model.backbone.body
    assert torch.equal(body.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert torch.equal(body.cls_token, state["cls_token"])
    grid = state["pos_embed"][:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(4, 2), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 8, 192)
    torch.testing.assert_close(body.pos_embed.detach(), torch.cat([state["pos_embed"][:, :1], resized], 1))


def test_vit_dino_teacher_file_with_a_non_square_grid(tmp_path):
    """LUPerson-style: a DINO checkpoint (teacher backbone.* + head.*) pretrained at 64×32 (grid 4×2)."""
    backbone_state = _timm_state("vit_tiny_patch16_224", num_classes=0, img_size=(64, 32))
    teacher = {"backbone." + k: v for k, v in backbone_state.items()}
    teacher["head.mlp.0.weight"] = torch.randn(16, 192)
    student = {"module." + k: v + 1 for k, v in teacher.items()}
    torch.save({"teacher": teacher, "student": student, "epoch": 100}, tmp_path / "dino.pth")

    same = build_model(VIT, img_size=[64, 32], pretrained=tmp_path / "dino.pth")
    loaded = same.backbone.body.state_dict()
    assert all(torch.equal(v, backbone_state[k]) for k, v in loaded.items())

    taller = build_model(VIT, img_size=[96, 32], pretrained=tmp_path / "dino.pth", pos_embed_grid=[4, 2])
    grid = backbone_state["pos_embed"][:, 1:].reshape(1, 4, 2, 192).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(6, 2), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 12, 192)
    expected = torch.cat([backbone_state["pos_embed"][:, :1], resized], 1)
    torch.testing.assert_close(taller.backbone.body.pos_embed.detach(), expected)
    with pytest.raises(DmireidError, match="pos_embed_grid"):
        build_model(VIT, img_size=[96, 32], pretrained=tmp_path / "dino.pth", pos_embed_grid=[3, 3])


def test_dmireid_state_of_a_timm_backbone_loads_back(vit, tmp_path):
    torch.save(vit.state_dict(), tmp_path / "reid.pth")
    model = build_model(VIT, img_size=[64, 32], pretrained=tmp_path / "reid.pth")
    mine, theirs = model.backbone.state_dict(), vit.backbone.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_data_size_reaches_a_vit_and_is_dropped_for_a_cnn_without_changing_its_init():
    from dmireid import build
    from dmireid.config import load_config

    def cfg(arch):
        return load_config(None, [f"model.arch={arch}", "model.bn_group_size=0", "data.height=64", "data.width=32"])

    assert build.model(cfg(VIT)).backbone.body.patch_embed.img_size == (64, 32)
    torch.manual_seed(4)
    with_size = build.model(cfg("timm:resnet10t")).state_dict()
    after = torch.rand(1)
    torch.manual_seed(4)
    without = build_model("timm:resnet10t").state_dict()
    assert torch.equal(after, torch.rand(1))  # the rejected img_size cost no random numbers
    assert all(torch.equal(with_size[k], without[k]) for k in without)
