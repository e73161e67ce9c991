"""The authors' checkpoint converter: equivalence on an authors-layout model, and clear errors."""
import subprocess
import sys

import pytest
import torch

import yyfast
from authors_model import AuthorsCifarYYNet, randomise_
from yyfast.convert import AUTHORS_OPTIONS


@pytest.mark.parametrize("width", [16, 32])
def test_converted_checkpoint_gives_the_same_outputs(width):
    authors = randomise_(AuthorsCifarYYNet(width)).eval()
    sd = authors.state_dict()
    assert len(sd) == 271  # the spec's count, for every width
    model = yyfast.create_model(f"yynet_small_{width}", backend="reference", **AUTHORS_OPTIONS).eval()
    model.load_state_dict(yyfast.convert_original_checkpoint(sd))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors(x), rtol=1e-5, atol=1e-5)


def test_wrapped_checkpoints_are_unwrapped():
    sd = AuthorsCifarYYNet(16).state_dict()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    assert list(yyfast.convert_original_checkpoint(wrapped)) == list(yyfast.convert_original_checkpoint(sd))


def test_missing_key_is_named():
    sd = AuthorsCifarYYNet(16).state_dict()
    del sd["reduction.0.1.proj.1.weight"]
    with pytest.raises(ValueError, match=r"missing key 'reduction\.0\.1\.proj\.1\.weight'"):
        yyfast.convert_original_checkpoint(sd)


def test_unexpected_key_is_named():
    sd = AuthorsCifarYYNet(16).state_dict()
    sd["yingyang.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected key 'yingyang\.extra\.weight'"):
        yyfast.convert_original_checkpoint(sd)


def test_foreign_state_dict_is_rejected():
    foreign = yyfast.create_model("yynet_small_16", backend="reference").state_dict()
    with pytest.raises(ValueError, match=r"missing key 'yingyang\.ying\.0\.0\.conv\.0\.weight'"):
        yyfast.convert_original_checkpoint(foreign)


def test_wrong_shape_is_named():
    sd = AuthorsCifarYYNet(16).state_dict()
    sd["cls.weight"] = torch.zeros(11, 40)
    with pytest.raises(ValueError, match=r"key 'cls\.weight' has shape \(11, 40\)"):
        yyfast.convert_original_checkpoint(sd)


def test_command_line(tmp_path):
    authors = randomise_(AuthorsCifarYYNet(16)).eval()
    src, dst = tmp_path / "authors.pt", tmp_path / "yyfast.pt"
    torch.save(authors.state_dict(), src)
    run = subprocess.run([sys.executable, "-m", "yyfast.convert", str(src), str(dst)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "yynet_small_16" in run.stdout
    model = yyfast.create_model("yynet_small_16", backend="reference", **AUTHORS_OPTIONS).eval()
    model.load_state_dict(torch.load(dst, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors(x), rtol=1e-5, atol=1e-5)
    torch.save({"foo": torch.zeros(1)}, src)
    bad = subprocess.run([sys.executable, "-m", "yyfast.convert", str(src), str(dst)], capture_output=True, text=True)
    assert bad.returncode == 2 and "missing key" in bad.stderr
