"""timm's model interface on the YYNet classes (yyfast.timm_interface); no timm needed."""
import pytest
import torch

import yyfast
from yyfast.config import INPUT_SIZES, YYNetConfig, list_models
from yyfast.reference_model import ReferenceYYNet

#: Two stages without the extra stride: feature points at strides 2, 4 and 8, of different widths.
TINY = YYNetConfig(yy_width=8, channel_step=2, yy_mbconvs=2, sp_stages=2, sp_mbconvs=1, sp_stage_step=4,
                   extra_sp_stride=False, head_width=12, num_classes=5)


def _models():
    return [yyfast.YYNet(TINY, backend="reference"), ReferenceYYNet(TINY)]


@pytest.mark.parametrize("model", _models(), ids=["YYNet", "ReferenceYYNet"])
def test_head_split_and_attributes(model):
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert model.num_features == feats.shape[1] == TINY.out_width
    assert torch.equal(model.forward_head(feats), model(x))
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size) == (2, TINY.head_width)
    assert torch.equal(model.get_classifier()(pre), model(x))
    assert model.num_classes == 5 and model.get_classifier() is model.head.classifier


def test_reset_classifier():
    model = yyfast.YYNet(TINY, backend="reference").eval()
    x = torch.randn(2, 3, 32, 32)
    pre = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7 and model.config.num_classes == 7
    assert torch.count_nonzero(model.head.classifier.bias) == 0  # the authors' init: zero biases
    model.reset_classifier(0)  # timm's "no classifier": the model returns the pre-logits
    assert model.num_classes == 0 and torch.equal(model(x), pre)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


def test_num_classes_zero_builds_a_feature_model():
    model = yyfast.YYNet(TINY.replace(num_classes=0), backend="reference")
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, TINY.head_width)


def test_drop_rate_is_head_dropout():
    assert yyfast.YYNet("yynet_small_16", backend="reference", drop_rate=0.25).config.head_dropout == 0.25
    with pytest.raises(ValueError, match="drop_rate"):
        yyfast.YYNet("yynet_small_16", backend="reference", drop_rate=0.25, head_dropout=0.5)


@pytest.mark.parametrize("name", list_models())
def test_pretrained_cfg_is_the_real_preprocessing(name):
    """The trainer and predict normalise with these values at this size, and resize + centre-crop
    (crop_pct 1.0) with bilinear interpolation."""
    from yyfast import predict
    from yyfast.train import augment

    model = yyfast.YYNet(name, backend="reference")
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == INPUT_SIZES[name]
    assert cfg["mean"] == augment.CIFAR10_MEAN == predict.CIFAR10_MEAN
    assert cfg["std"] == augment.CIFAR10_STD == predict.CIFAR10_STD
    assert (cfg["crop_pct"], cfg["interpolation"], cfg["num_classes"]) == (1.0, "bilinear", model.num_classes)
    assert model.default_cfg == cfg
    modules = dict(model.named_modules())
    for conv in cfg["first_conv"]:
        assert modules[conv].in_channels == model.config.in_chans
    assert modules[cfg["classifier"]] is model.get_classifier()


@pytest.mark.parametrize("config", [TINY, yyfast.get_config("yynet_small_16")], ids=["tiny", "small_16"])
def test_feature_info_matches_forward_intermediates(config):
    model = yyfast.YYNet(config, backend="reference").eval()
    x = torch.randn(2, 3, 32, 32)
    final, maps = model.forward_intermediates(x)
    assert torch.equal(final, model.forward_features(x))
    info = model.feature_info
    assert len(maps) == len(info) >= 3
    for m, fi in zip(maps, info):
        assert m.shape == (2, fi["num_chs"], 32 // fi["reduction"], 32 // fi["reduction"])
    assert [fi["reduction"] for fi in info] == sorted({fi["reduction"] for fi in info})  # one point a stride
    only = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    assert torch.equal(only[0], maps[0]) and torch.equal(only[1], maps[-1])
    with pytest.raises(ValueError, match="feature index"):
        model.forward_intermediates(x, indices=[len(info)])


def test_features_only_model():
    full = yyfast.create_model(TINY, backend="reference").eval()
    feats = yyfast.create_model(TINY, backend="reference", features_only=True, out_indices=(0, 1)).eval()
    feats.model.load_state_dict(full.state_dict(), strict=False)  # the pruned model keeps a prefix of the keys
    x = torch.randn(2, 3, 32, 32)
    out = feats(x)
    want = full.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert len(out) == 2 and all(torch.equal(a, b) for a, b in zip(out, want))
    assert feats.feature_info.channels() == [m.shape[1] for m in out]
    assert feats.feature_info.reduction() == [2, 4]
    assert not any(k.startswith("model.head.") for k in feats.state_dict())  # no classifier, like timm's
    assert len(feats.model.single_path) < len(full.single_path)
    with pytest.raises(ValueError, match="features_only"):
        yyfast.create_model(TINY, backend="reference", out_indices=(0,))


@pytest.mark.parametrize("num_classes", [5, 0])
def test_inference_model_has_the_read_only_interface(num_classes):
    model = yyfast.YYNet(TINY.replace(num_classes=num_classes), backend="reference").eval()
    fast = yyfast.optimize_for_inference(model)
    x = torch.randn(2, 3, 32, 32)
    feats = fast.forward_features(x)
    assert feats.shape[1] == fast.num_features == model.num_features
    assert torch.equal(fast.forward_head(feats), fast(x))
    assert fast.forward_head(feats, pre_logits=True).shape == (2, fast.head_hidden_size)
    assert torch.allclose(fast(x), model(x), rtol=1e-4, atol=1e-5)
    assert fast.num_classes == num_classes and fast.pretrained_cfg == model.pretrained_cfg
    assert fast.feature_info == model.feature_info and fast.get_classifier() is fast.classifier


def test_a_failing_timm_registration_warns_instead_of_raising(monkeypatch):
    """A timm whose registry API moved must not break `import timm` (the hook runs inside it)."""
    import sys

    from yyfast import timm_registry

    monkeypatch.setitem(sys.modules, "yyfast.timm_models", None)  # the import of the entry points fails
    monkeypatch.delattr(yyfast, "timm_models", raising=False)  # (set on the package once timm was imported)
    with pytest.warns(UserWarning, match="could not register its models with timm"):
        timm_registry.register()
