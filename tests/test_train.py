"""``python -m yyfast.train`` on the CPU: outputs, the recipe's rules, resume equality, errors, learning."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from yyfast.train import main
from yyfast.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("images_per_s", "epoch_time_s", "wall_time_s")


def cifar_tar():
    path = os.environ.get("YYFAST_CIFAR10") or str(REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    if not os.path.isfile(path):
        pytest.skip(f"CIFAR-10 tar.gz not found at {path} (set YYFAST_CIFAR10)")
    return path


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """A synthetic cifar-10-batches-py: 50 train and 20 test random images of 10 classes."""
    d = tmp_path_factory.mktemp("data") / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 10) for i in range(1, 6)] + [("test_batch", 20)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n)]
        (d / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    return str(d)


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


# One thread: on a 2-core machine, two intra-op threads collapse (several times slower) as soon as
# anything else competes for the cores; one thread is steady.
def _args(data, out, *extra):
    return ["--data", data, "--model", "yynet_small_16", "--out", str(out), "--no-progress", "--no-cache",
            "--threads", "1", *extra]


# Resume: 3 epochs of 4 steps (50 images, batch 16: 3 full batches and one of 2); EMA from step 3;
# head dropout makes the global torch RNG matter; 16x16 images keep it fast.
RESUME_RUN = ("--epochs", "3", "--batch-size", "16", "--seed", "3", "--head-dropout", "0.2", "--image-size", "16")


@pytest.fixture(scope="module")
def unbroken_run(tiny_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    assert main(_args(tiny_cifar, out, *RESUME_RUN)) == 0
    return out


def test_outputs_of_a_run(unbroken_run):
    out = unbroken_run
    metrics = read_metrics(out)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "ema_test_loss", "ema_test_acc", "lr",
                    "weight_decay", "images_per_s", "wall_time_s"):
            assert m[key] is not None and np.isfinite(m[key]), key
        # The end-of-epoch rule: weight decay = lr * 1.56.
        assert m["weight_decay"] == pytest.approx(m["lr"] * 1.56, rel=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_completed"] == 3 and summary["device"] == "cpu"
    assert summary["torch_version"] == torch.__version__ and summary["model"] == "yynet_small_16"
    assert summary["last"]["test_acc"] == metrics[-1]["test_acc"]
    assert summary["best"]["test_acc"] == max(m["test_acc"] for m in metrics)
    assert summary["best"]["ema_test_acc"] == max(m["ema_test_acc"] for m in metrics)
    assert summary["args"]["lr"] == 1e-2 and summary["num_parameters"] == 52_882
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(str(out / "last.pt"))
    for key in ("model", "optimizer", "scheduler", "ema", "scaler", "rng", "epoch", "args", "history", "config"):
        assert key in ckpt, key
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch_cpu"}
    assert ckpt["epoch"] == 3 and ckpt["ema"]["started"]
    assert ckpt["optimizer"]["param_groups"][0]["amsgrad"] is True
    assert not [p for p in os.listdir(out) if ".tmp-" in p], "temporary files left behind"


def test_resume_is_bit_identical(tiny_cifar, unbroken_run, tmp_path):
    out = tmp_path / "resumed"
    assert main(_args(tiny_cifar, out, *RESUME_RUN, "--stop-after-epochs", "1")) == 0
    assert len(read_metrics(out)) == 1
    assert not json.loads((out / "summary.json").read_text())["finished"]
    # Only --out and --resume: every other option comes from the checkpoint.
    threads = torch.get_num_threads()
    assert main(["--out", str(out), "--resume", "--no-progress", "--stop-after-epochs", "2"]) == 0
    assert torch.get_num_threads() == threads  # --threads (saved in the checkpoint) was undone
    assert main(["--out", str(out), "--resume", "--no-progress"]) == 0
    strip = [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_metrics(out)]
    want = [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_metrics(unbroken_run)]
    assert strip == want
    a, b = load_checkpoint(str(unbroken_run / "last.pt")), load_checkpoint(str(out / "last.pt"))
    for part in ("model",):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), k
    for k, v in a["ema"]["module"].items():
        assert torch.equal(v, b["ema"]["module"][k]), k


def test_refuses_to_overwrite_or_change_a_run(tiny_cifar, unbroken_run, capsys):
    assert main(_args(tiny_cifar, unbroken_run, *RESUME_RUN)) == 2
    assert "already holds last.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(unbroken_run), "--resume", "--epochs", "5"])
    assert "--epochs 5" in capsys.readouterr().err
    # A finished run resumed is a no-op that keeps its results.
    before = read_metrics(unbroken_run)
    assert main(["--out", str(unbroken_run), "--resume", "--no-progress"]) == 0
    assert read_metrics(unbroken_run) == before


def test_bad_data_path_is_a_clear_error(tmp_path, capsys):
    assert main(_args(str(tmp_path / "missing"), tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "no such file or directory" in err and "train/<class>/*.jpg" in err


def test_bad_options_are_clear_errors(tiny_cifar, tmp_path, capsys):
    # The standard ImageNet augmentation runs per image in DataLoader workers: not on the decoded cache.
    assert main(_args(tiny_cifar, tmp_path / "a", "--epochs", "1", "--recipe", "imagenet")) == 2
    assert "--recipe imagenet augments each image in DataLoader workers" in capsys.readouterr().err
    # One image and a batch of 64: not even a batch of 2 to train BatchNorm on.
    assert main(_args(tiny_cifar, tmp_path / "b", "--epochs", "1", "--subset-train", "1")) == 2
    assert "larger than the training set" in capsys.readouterr().err
    for bad in (["--epochs", "0"], ["--head-dropout", "1.5"], ["--fusion", "concat"]):
        with pytest.raises(SystemExit):
            main(_args(tiny_cifar, tmp_path / "c", "--epochs", "1", *bad))
        assert "error" in capsys.readouterr().err


def test_learns_on_a_cifar10_subset(tmp_path, tmp_path_factory):
    """A real (short) run on real CIFAR-10 images: test accuracy well above chance (10%).

    200 images a class, downscaled to 16x16 to fit the CPU test budget, 3 epochs; this setting
    reaches about 30-35%, so 25% leaves a margin for other seeds and platforms.
    """
    cache = tmp_path_factory.getbasetemp() / "yyfast-data-cache"
    out = tmp_path / "learn"
    args = ["--data", cifar_tar(), "--model", "yynet_small_16", "--out", str(out), "--no-progress",
            "--cache-dir", str(cache), "--subset-train", "2000", "--subset-test", "500", "--image-size", "16",
            "--epochs", "3", "--batch-size", "64", "--seed", "0", "--threads", "1"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_train"] == 2000 and summary["num_test"] == 500
    assert summary["last"]["test_acc"] > 0.25, summary["last"]
    assert summary["last"]["ema_test_acc"] > 0.25, summary["last"]
