"""Presets, exact parameter counts, and option validation."""
import pytest
import torch

import yyfast
from yyfast.config import FUSIONS, PARAMETER_COUNTS, YYNetConfig


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_exact_parameter_counts(name):
    model = yyfast.create_model(name, backend="reference")
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", ["yynet_small_16", "yynet_small_32", "yynet_small_64"])
@pytest.mark.parametrize("options", [dict(act="silu"), dict(fusion="gate_sub", se_gate="hardsigmoid"),
                                     dict(yin_input="red", head_dropout=0.2, mbconv_dropout=0.1)])
def test_counts_do_not_depend_on_options(name, options):
    model = yyfast.create_model(name, backend="reference", **options)
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNTS[name]


def test_list_models():
    assert yyfast.list_models() == ["yynet_imagenet", "yynet_small_16", "yynet_small_32", "yynet_small_64"]


def test_imagenet_preset_matches_authors_script():
    cfg = yyfast.get_config("yynet_imagenet")
    assert (cfg.act, cfg.se_gate, cfg.yin_input, cfg.fusion) == ("gelu", "hardsigmoid", "red", "gate_sub")
    assert cfg.branch_widths() == (16, 18, 20, 22)
    assert [cfg.sp_stage_widths(i) for i in range(4)] == [(64, 66, 68), (66, 68, 70), (68, 70, 72), (70, 72, 74)]
    assert cfg.head_width == 500 and cfg.num_classes == 1000 and not cfg.extra_sp_stride


def test_paper_defaults():
    cfg = yyfast.get_config("yynet_small_64")
    assert (cfg.act, cfg.fusion, cfg.yin_input, cfg.se_gate) == ("gelu", "add", "mean", "sigmoid")
    assert cfg.fusion_coefficients == (0.0, 1.0, 1.0)


@pytest.mark.parametrize("option, value, needle", [
    ("act", "relu", "'gelu', 'silu'"),
    ("fusion", "concat", "'add'"),
    ("se_gate", "tanh", "'sigmoid', 'hardsigmoid'"),
    ("yin_input", "green", "'mean', 'red'"),
    ("yy_width", -4, "positive integer"),
    ("yy_width", 0, "positive integer"),
    ("head_width", 2.5, "positive integer"),
    ("channel_step", -1, "non-negative"),
    ("head_dropout", 1.5, "[0, 1)"),
    ("mbconv_dropout", -0.1, "[0, 1)"),
    ("num_classes", -1, "non-negative integer"),  # 0 is timm's "no classifier"
])
def test_bad_options_name_the_option(option, value, needle):
    with pytest.raises(ValueError) as exc:
        yyfast.create_model("yynet_small_16", backend="reference", **{option: value})
    assert option in str(exc.value) and needle in str(exc.value)


def test_unknown_preset_and_option():
    with pytest.raises(ValueError, match="unknown model 'yynet_huge'.*yynet_small_16"):
        yyfast.create_model("yynet_huge")
    with pytest.raises(ValueError, match="unknown option 'widht'"):
        yyfast.create_model("yynet_small_16", widht=3)


def test_bad_backend_names_the_allowed_values():
    with pytest.raises(ValueError, match="backend='fast'.*'reference', 'triton', 'cuda', 'auto'"):
        yyfast.create_model("yynet_small_16", backend="fast")


def test_config_object_and_overrides():
    cfg = YYNetConfig(yy_width=8, head_width=12, num_classes=3, fusion="mul")
    model = yyfast.YYNet(cfg, backend="reference")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert set(FUSIONS) == {"add", "mul", "gate", "mul_add", "gate_sub", "gate_add"}
