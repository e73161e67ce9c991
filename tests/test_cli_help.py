"""Every ``python -m yyfast.*`` CLI's ``--help`` (issue 16): a one-line description, examples, no runpy
warning, no literal ``%%``, and "(default: ...)" only for real values."""
import subprocess
import sys

import pytest

CLIS = ("train", "evaluate", "predict", "convert", "export", "info")


@pytest.mark.parametrize("module", CLIS)
def test_help(module):
    # -W error: runpy's "found in sys.modules ... prior to execution" RuntimeWarning becomes a failure
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", f"yyfast.{module}", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = proc.stdout
    assert text.startswith(f"usage: python -m yyfast.{module}")
    description = " ".join(text.split("\n\n")[1].split())  # argparse wraps it to the terminal's width
    assert description.endswith(".") and 20 < len(description) < 250, description  # one sentence
    assert "examples:\n  python -m yyfast." in text or "examples:\n  torchrun" in text
    assert "%%" not in text
    assert "default: None" not in text and "default: False" not in text


def test_real_defaults_are_shown_zero_included():
    from yyfast.train.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "--seed SEED seed of Python's, numpy's and torch's generators (default: 0)" in text
    assert "--clip CLIP global gradient-norm clip (default: 1.0)" in text
    assert "--no-progress no progress bars (default" not in text  # a store_true flag: False is no value
