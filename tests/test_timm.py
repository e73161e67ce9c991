"""The presets as timm models, used only through timm's own APIs (CI installs the real timm)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import yyfast
from yyfast.config import INPUT_SIZES, list_models

timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'yyfast[timm]'; CI installs it)")
from timm.data import create_transform, resolve_data_config  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import create_scheduler_v2  # noqa: E402
from PIL import Image  # noqa: E402


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("first", ["yyfast", "timm"])
def test_registration_in_either_import_order(first):
    """``import yyfast`` does not import timm, and the presets are timm models whichever comes first."""
    code = ("import sys\n"
            + ("import yyfast\nassert 'timm' not in sys.modules, 'import yyfast imported timm'\nimport timm\n"
               if first == "yyfast" else "import timm\nimport yyfast\n")
            + "print(','.join(timm.list_models('yynet*')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.strip().split(",")) >= set(list_models())


def test_create_model_returns_yynet():
    assert set(timm.list_models("yynet*")) >= set(list_models())
    model = timm.create_model("yynet_small_64", pretrained=False, num_classes=100)
    assert isinstance(model, yyfast.YYNet) and model.num_classes == 100
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert timm.create_model("yynet_small_16", drop_rate=0.2).config.head_dropout == 0.2
    with pytest.raises(RuntimeError, match="No pretrained weights"):  # yyfast publishes none
        timm.create_model("yynet_small_16", pretrained=True)


@pytest.mark.parametrize("name", list_models())
def test_resolve_data_config_is_the_preset_preprocessing(name):
    from yyfast.train.augment import CIFAR10_MEAN, CIFAR10_STD

    model = timm.create_model(name)
    cfg = resolve_data_config({}, model=model)
    assert cfg["input_size"] == INPUT_SIZES[name]
    assert (cfg["mean"], cfg["std"]) == (CIFAR10_MEAN, CIFAR10_STD)
    assert (cfg["crop_pct"], cfg["interpolation"]) == (1.0, "bilinear")


def test_eval_transform_matches_the_trainers_decoding():
    """timm's eval transform of a non-square photo gives the tensor the trainer's decoder and
    normaliser give (shorter side resized bilinear, centre crop, CIFAR-10 mean/std)."""
    import io

    from yyfast.train.augment import BatchAugment
    from yyfast.train.data import decode_image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8))  # 80x40: resizes to exactly 64x32
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    trainer = BatchAugment(crop=32).eval(torch.from_numpy(decode_image(buf.getvalue(), 32, "test.png"))[None])[0]
    transform = create_transform(**resolve_data_config({}, model=timm.create_model("yynet_small_16")))
    assert torch.allclose(transform(img), trainer, atol=1e-6)


def test_training_steps_with_timm_apis_only():
    model = timm.create_model("yynet_small_16", num_classes=3, drop_rate=0.1)
    transform = create_transform(**resolve_data_config({}, model=model), is_training=True)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-2, weight_decay=0.05)
    scheduler, epochs = create_scheduler_v2(optimizer, sched="cosine", num_epochs=2, warmup_epochs=0)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)) for _ in range(8)]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lrs = []
    model.train()
    for epoch in range(epochs):
        for start in (0, 4):
            x = torch.stack([transform(im) for im in images[start:start + 4]])
            loss = torch.nn.functional.cross_entropy(model(x), labels[start:start + 4])
            assert torch.isfinite(loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch + 1)
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k, _ in model.named_parameters())
    assert lrs[1] < lrs[0]  # the cosine schedule moved


def test_features_only():
    feats = timm.create_model("yynet_small_16", features_only=True, out_indices=(1, 2))
    assert isinstance(feats.model, yyfast.YYNet)
    maps = feats(torch.randn(2, 3, 32, 32))
    assert [m.shape[1] for m in maps] == feats.feature_info.channels()
    assert [32 // m.shape[-1] for m in maps] == feats.feature_info.reduction() == [4, 8]
    assert feats.pretrained_cfg["input_size"] == (3, 32, 32)


def test_timm_loads_save_pretrained_folders(tmp_path):
    model = yyfast.create_model("yynet_small_16", num_classes=4, act="silu")
    model.save_pretrained(tmp_path)
    # timm's own ways to a local checkpoint: a "local-dir:" name, and pretrained_cfg_overlay's file
    same = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert same.config == model.config and _same_weights(same, model)
    finetune = timm.create_model("yynet_small_16", pretrained=True, num_classes=9, act="silu",
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors")))
    sd, ref = finetune.state_dict(), model.state_dict()
    assert finetune.num_classes == 9 and finetune.head.classifier.weight.shape[0] == 9
    assert all(torch.equal(sd[k], ref[k]) for k in ref if not k.startswith("head.classifier."))


def test_timm_hf_hub_name_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants
    from hub_cache import put_in_hub_cache

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = yyfast.create_model("yynet_small_16")
    model.save_pretrained(tmp_path / "saved")
    put_in_hub_cache(tmp_path / "cache", "someone/yynet-s16", tmp_path / "saved")
    loaded = timm.create_model("hf-hub:someone/yynet-s16", pretrained=True, cache_dir=tmp_path / "cache")
    assert _same_weights(loaded, model)

