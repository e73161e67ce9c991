"""``python -m yyfast.evaluate``: a checkpoint's raw and EMA accuracy, table and JSON, errors."""
import json
import pickle

import numpy as np
import pytest

from yyfast.evaluate import main as evaluate_main
from yyfast.train import main as train_main


def _cifar_batches(root, per_batch=10, test=20, num_classes=10, seed=0):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (d / name).write_bytes(pickle.dumps({b"data": data, b"labels": [i % num_classes for i in range(n)]}))
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch on 50 synthetic images, EMA from the first step so the checkpoint has one."""
    root = tmp_path_factory.mktemp("eval")
    data = _cifar_batches(root)
    out = root / "run"
    assert train_main(["--data", str(data), "--model", "yynet_small_16", "--out", str(out), "--epochs", "1",
                       "--batch-size", "16", "--ema-start", "0", "--image-size", "16", "--no-progress",
                       "--no-cache", "--threads", "1"]) == 0
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return data, out / "last.pt", metrics


def test_json_matches_the_trainers_own_evaluation(trained, capsys):
    data, ckpt, metrics = trained
    capsys.readouterr()
    assert evaluate_main([str(ckpt), "--data", str(data), "--json", "--no-cache"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["num_images"] == 20 and r["epoch"] == 1 and r["model"] == "yynet_small_16"
    assert r["raw"]["acc"] == pytest.approx(metrics["test_acc"], abs=1e-12)
    assert r["raw"]["loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert r["ema"]["acc"] == pytest.approx(metrics["ema_test_acc"], abs=1e-12)
    assert r["ema"]["loss"] == pytest.approx(metrics["ema_test_loss"], rel=1e-6)


def test_table_and_subset(trained, capsys):
    data, ckpt, _ = trained
    capsys.readouterr()
    assert evaluate_main([str(ckpt), "--data", str(data), "--subset-test", "10", "--no-progress", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "10 test images" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("raw ", "ema "))]
    assert [r[0] for r in rows] == ["raw", "ema"] and all(r[2].endswith("%") for r in rows)


def test_errors_are_one_clear_line(trained, tmp_path, capsys):
    data, ckpt, _ = trained
    assert evaluate_main([str(tmp_path / "none.pt"), "--data", str(data)]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert evaluate_main([str(junk), "--data", str(data)]) == 2
    assert "not a readable yyfast checkpoint" in capsys.readouterr().err
    assert evaluate_main([str(ckpt), "--data", str(tmp_path / "nodata")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    other = _cifar_batches(tmp_path / "eleven", num_classes=11, test=22)
    assert evaluate_main([str(ckpt), "--data", str(other), "--no-cache"]) == 2
    assert "classes the checkpoint was not trained on" in capsys.readouterr().err
