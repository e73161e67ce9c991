"""``torchrun --nproc_per_node=2 -m yyfast.train``: DistributedDataParallel with gloo on the CPU."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch


def test_two_process_gloo_run(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend for torch.distributed")
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 15)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (d / name).write_bytes(pickle.dumps({b"data": data, b"labels": [i % 10 for i in range(n)]}))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --standalone: a local rendezvous on a free port of 127.0.0.1.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "yyfast.train", "--data", str(d), "--model", "yynet_small_16", "--out", str(out),
           "--epochs", "2", "--batch-size", "16", "--stop-after-epochs", "1", "--ema-start", "0", "--no-progress",
           "--cache-dir", str(tmp_path / "cache"), "--backend", "reference", "--image-size", "16"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Only rank 0 logs and writes.
    assert proc.stdout.count("epoch   1/2") == 1, proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_completed"] == 1
    assert summary["num_test"] == 15  # the test split is shared out, then summed over ranks
    (m,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(m["train_loss"]) and 0 <= m["test_acc"] <= 1 and m["ema_test_acc"] is not None
    ckpt = torch.load(out / "last.pt", weights_only=True)  # plain types only: no unpickling of code
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["model"])
