"""``yynet_imagenet`` is the authors' ImageNet script's model, and its checkpoints convert.

The oracle is ``tests/authors_imagenet_model.py``, the script's module tree with its own names:
random weights and statistics go in through ``convert_original_checkpoint``, and train- and
eval-mode outputs and the running statistics after a training forward must match.
"""
import subprocess
import sys

import pytest
import torch

import yyfast
from authors_imagenet_model import ScriptImageNetYYNet
from authors_model import randomise_
from yyfast.config import PARAMETER_COUNTS
from yyfast.convert import detect_layout, original_model

SIZE = 64  # any multiple of 32 works; 224 only costs time


def _pair(backend="reference", classes=1000, seed=0):
    if backend != "reference" and not yyfast.backends()[backend]["available"]:
        pytest.skip(f"{backend} backend unavailable: {yyfast.backends()[backend]['reason']}")
    torch.manual_seed(seed)
    script = randomise_(ScriptImageNetYYNet(classes))
    sd = script.state_dict()
    preset, overrides = original_model(sd)
    model = yyfast.create_model(preset, backend=backend, **overrides)
    model.load_state_dict(yyfast.convert_original_checkpoint({"model_state_dict": sd, "epoch": 126}))
    # float64: random weights make activations large, and float32 rounding would blur a real mismatch
    return script.double(), model.double()


def test_script_model_has_the_presets_parameter_count():
    script = ScriptImageNetYYNet()
    assert sum(p.numel() for p in script.parameters()) == PARAMETER_COUNTS["yynet_imagenet"] == 1_608_144
    assert "yingyang.ying.0.1.expand_conv.0.weight" in script.state_dict()
    assert "reduction.2.0.conv3.weight" in script.state_dict()
    assert detect_layout(script.state_dict()).name == "ImageNet script"


def test_preset_discards_the_mbconv_input_bn_like_the_script():
    assert yyfast.get_config("yynet_imagenet").discard_mbconv_input_bn


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_eval_outputs_equal_the_scripts(backend):
    script, model = _pair(backend)
    script.eval(), model.eval()
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), script(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_training_forward_and_running_statistics_equal_the_scripts(backend):
    """In training the script's input BN still updates its statistics, though its output is dropped."""
    script, model = _pair(backend)
    script.train(), model.train()
    x = torch.randn(3, 3, SIZE, SIZE, dtype=torch.float64)
    torch.testing.assert_close(model(x), script(x), rtol=1e-9, atol=1e-9)
    after = yyfast.convert_original_checkpoint(script.state_dict())
    ours = model.state_dict()
    moved = [k for k in after if k.endswith("bn_in.running_mean")]
    assert moved, "the MBConv input BNs exist"
    for key, value in after.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-9, atol=1e-9, msg=lambda m, k=key: f"{k}: {m}")


def test_other_class_counts_keep_the_scripts_head_width():
    script, model = _pair(classes=100)
    assert model.config.num_classes == 100 and model.config.head_width == 50
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), script.eval()(x), rtol=1e-9, atol=1e-9)


def test_missing_script_key_is_named():
    sd = ScriptImageNetYYNet().state_dict()
    del sd["reduction.2.0.conv3.weight"]
    with pytest.raises(ValueError, match=r"missing key 'reduction\.2\.0\.conv3\.weight'"):
        yyfast.convert_original_checkpoint(sd)


def test_command_line_takes_the_d2l_trainer_checkpoint(tmp_path):
    script = randomise_(ScriptImageNetYYNet()).double().eval()
    src, dst = tmp_path / "checkpoint126", tmp_path / "yyfast.pt"
    torch.save({"epoch": 126, "model_state_dict": script.state_dict(), "loss": torch.tensor(2.5),
                "best_acc": 0.66}, src)
    res = subprocess.run([sys.executable, "-m", "yyfast.convert", str(src), str(dst)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert "ImageNet script" in res.stdout and 'create_model("yynet_imagenet")' in res.stdout
    model = yyfast.create_model("yynet_imagenet", backend="reference").double().eval()
    model.load_state_dict(torch.load(dst, weights_only=True))
    x = torch.randn(1, 3, SIZE, SIZE, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), script(x), rtol=1e-9, atol=1e-9)
