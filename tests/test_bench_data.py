"""``bench/data_throughput.py`` runs end to end on a tiny setting and reports every row."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
pytest.importorskip("torchvision", reason="the streaming path is torchvision's (optional extra)")
import data_throughput  # noqa: E402


def test_tiny_run_reports_every_path(capsys):
    assert data_throughput.main(["--images", "8", "--batch", "4", "--workers", "0,1", "--step-batch", "1",
                                 "--reps", "1", "--backends", "reference"]) == 0
    out = capsys.readouterr().out
    for row in ("stream (paper recipe) | 0 worker(s)", "stream (imagenet recipe) | 1 worker(s)",
                "cache: one-time decode", "cache: batch augmentation", "yynet_imagenet train step, batch 1"):
        assert row in out, out


def test_bad_options_are_one_line(capsys):
    assert data_throughput.main(["--images", "2", "--batch", "4"]) == 2
    assert "--images must be at least --batch" in capsys.readouterr().err
