"""Weights that travel: save_pretrained/from_pretrained (safetensors + config.json), Hub ids offline,
create_model(pretrained=...), torch.hub via hubconf.py."""
import json
from pathlib import Path

import pytest
import torch

import yyfast
from yyfast.config import YYNetConfig
from yyfast.reference_model import ReferenceYYNet

pytest.importorskip("safetensors", reason="safetensors is not installed (pip install 'yyfast[hub]'; CI installs it)")
from safetensors.torch import load_file, save_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = YYNetConfig(yy_width=8, head_width=12, num_classes=3, act="silu", fusion="mul", sp_mbconvs=1)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def saved16(tmp_path):
    """A trained-looking yynet_small_16 (non-default BN statistics) saved with save_pretrained."""
    model = yyfast.create_model("yynet_small_16", backend="reference")
    model.train()(torch.randn(4, 3, 32, 32))  # move the running statistics off their defaults
    model.save_pretrained(tmp_path / "s16")
    return model, tmp_path / "s16"


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading called torch.load / pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)


def test_round_trip_custom_config(tmp_path, no_unpickling):
    model = yyfast.YYNet(TINY, backend="reference").eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert load_file(str(tmp_path / "model.safetensors")).keys() == model.state_dict().keys()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "yynet" and config["num_classes"] == 3
    assert config["model_args"]["act"] == "silu" and config["pretrained_cfg"]["classifier"] == "head.classifier"
    for cls, kwargs in ((yyfast.YYNet, {"backend": "reference"}), (ReferenceYYNet, {})):
        loaded = cls.from_pretrained(tmp_path, **kwargs).eval()
        assert type(loaded) is cls and loaded.config == model.config and _same_weights(loaded, model)
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(loaded(x), model(x))


def test_preset_config_json_holds_only_the_differences(saved16):
    _, folder = saved16
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "yynet_small_16" and config["model_args"] == {}
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_create_model_pretrained_folder(saved16):
    model, folder = saved16
    loaded = yyfast.create_model("yynet_small_16", pretrained=str(folder), backend="reference")
    assert _same_weights(loaded, model)
    # fine-tuning: a new classifier, everything else loaded; training-only options may differ
    tuned = yyfast.create_model("yynet_small_16", pretrained=folder, num_classes=7, drop_rate=0.3)
    sd, ref = tuned.state_dict(), model.state_dict()
    assert tuned.num_classes == 7 and tuned.config.head_dropout == 0.3
    assert all(torch.equal(sd[k], ref[k]) for k in ref if not k.startswith("head.classifier."))
    feats = yyfast.create_model("yynet_small_16", pretrained=folder, features_only=True)
    assert len(feats(torch.randn(1, 3, 32, 32))) == len(model.feature_info)


@pytest.mark.parametrize("name, overrides, needle", [
    ("yynet_small_32", {}, "yy_width=16"),
    ("yynet_small_16", {"act": "silu"}, "act='gelu'"),
    ("yynet_small_16", {"fusion": "mul"}, "fusion='add'"),
])
def test_create_model_pretrained_mismatch_names_the_option(saved16, name, overrides, needle):
    _, folder = saved16
    with pytest.raises(ValueError, match=needle):
        yyfast.create_model(name, pretrained=folder, **overrides)


def _edit_config(folder, **changes):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, needle", [
    ({"architecture": "resnet50"}, "architecture='resnet50'"),
    ({"model_args": {"bogus": 1}}, "unknown option 'bogus'"),
    ({"model_args": {"act": "relu"}}, "act='relu'"),
    ({"model_args": {"yy_width": 24}}, r"key 'yin\.0\.conv1\.weight' has shape"),
    ({"num_classes": 5}, r"key 'head\.classifier\.weight' has shape \(10, 40\)"),
])
def test_bad_config_json_names_the_key(saved16, changes, needle):
    _, folder = saved16
    _edit_config(folder, **changes)
    with pytest.raises(ValueError, match=needle):
        yyfast.YYNet.from_pretrained(folder)


def test_bad_weights_name_the_key(saved16):
    model, folder = saved16
    state = load_file(str(folder / "model.safetensors"))
    state.pop("head.fc.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="missing key 'head.fc.bias'"):
        yyfast.YYNet.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        yyfast.YYNet.from_pretrained(folder)


@pytest.mark.parametrize("source, needle", [
    (True, "publishes no weights"),
    ("no/such/folder/here", "neither a folder"),
])
def test_bad_pretrained_argument(source, needle):
    with pytest.raises(ValueError, match=needle):
        yyfast.create_model("yynet_small_16", pretrained=source)


def test_hub_id_offline(saved16, tmp_path, monkeypatch, no_unpickling):
    pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed (pip install 'yyfast[hub]')")
    import huggingface_hub.constants as hf_constants
    from hub_cache import put_in_hub_cache

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    model, folder = saved16
    put_in_hub_cache(tmp_path / "cache", "someone/yynet-s16", folder)
    loaded = yyfast.YYNet.from_pretrained("someone/yynet-s16", cache_dir=tmp_path / "cache", backend="reference")
    assert _same_weights(loaded, model)
    with pytest.raises(ValueError, match="cannot get 'someone/absent'"):
        yyfast.YYNet.from_pretrained("someone/absent", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # the default cache
    assert _same_weights(yyfast.create_model("yynet_small_16", pretrained="someone/yynet-s16"), model)


def test_torch_hub_local(saved16):
    model, folder = saved16
    loaded = torch.hub.load(str(REPO), "yynet_small_16", source="local", pretrained=str(folder))
    assert isinstance(loaded, yyfast.YYNet) and _same_weights(loaded, model)
    fresh = torch.hub.load(str(REPO), "yynet_imagenet", source="local", num_classes=10, backend="reference")
    assert fresh.config.name == "yynet_imagenet" and fresh.num_classes == 10
    with pytest.raises(ValueError, match="publishes no weights"):
        torch.hub.load(str(REPO), "yynet_small_16", source="local", pretrained=True)


def test_missing_extra_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "safetensors", None)  # as if not installed
    with pytest.raises(ImportError, match=r"yyfast\[hub\]"):
        yyfast.create_model("yynet_small_16").save_pretrained(tmp_path)
