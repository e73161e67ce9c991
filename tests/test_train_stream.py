"""ImageNet-style training end to end on the CPU: a tiny image-folder tree of real JPEGs of mixed
sizes, streamed (``--data-mode stream``) by a 2-process torchrun with ``--sync-bn``, killed after its
first checkpoint, resumed in one process (another world size, the same global batch), then evaluated
and used for prediction with the same preprocessing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_stream import make_jpeg_tree

pytest.importorskip("torchvision", reason="the streaming path is torchvision's (optional extra)")


def _descendants(pid: int):
    """``pid`` and every process below it (from /proc), children before they are orphaned."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun's process group and every process below it. torchrun starts each worker in a
    session of its own, so the group alone left the workers alive, holding the output pipe open:
    found 2026-11-28, when a worker's DataLoader child deadlocked in CPython's fork handling and the
    test waited on the pipe for ever."""
    for p in _descendants(proc.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "yyfast.train", *args]


def test_stream_torchrun_kill_resume_evaluate_predict(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend for torch.distributed")
    root = make_jpeg_tree(tmp_path / "tree", train=6, val=3)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--data", str(root), "--model", "yynet_small_16", "--out", str(out), "--data-mode", "stream",
            "--workers", "1", "--epochs", "3", "--batch-size", "4", "--image-size", "16", "--sync-bn",
            "--backend", "cuda", "--no-progress", "--ema-start", "0"]
    # A run killed (SIGKILL to the whole torchrun group) once its first checkpoint is written.
    proc = subprocess.Popen(_torchrun(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    _kill_all(proc)
    try:
        log = proc.communicate(timeout=120)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        pytest.fail("the killed torchrun run still held its output pipe after 120 s (a process survived)")
    assert (out / "last.pt").exists(), log[-3000:]
    first = torch.load(out / "last.pt", weights_only=True)  # plain types: torch's default loader
    assert first["data_mode"] == "stream" and first["preprocess"]["recipe"] == "paper"
    assert first["data_fingerprint"].get("content") is False  # names and sizes: no full read at each start
    # Resume to the end in ONE process: the global batch is unchanged, so the schedule is the same.
    res = subprocess.run([sys.executable, "-m", "yyfast.train", "--out", str(out), "--resume", "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["world_size"] == 1 and summary["num_train"] == 18
    assert [m["epoch"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]
    assert summary["num_test"] == 9  # each validation image once over both ranks
    # evaluate streams nothing for the paper recipe: the cache holds the same stretch geometry.
    ev = subprocess.run([sys.executable, "-m", "yyfast.evaluate", str(out / "last.pt"), "--data", str(root),
                         "--json", "--no-cache", "--backend", "cuda"], capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-3000:]
    acc = json.loads(ev.stdout)["raw"]["acc"]
    assert acc == pytest.approx(summary["last"]["test_acc"], abs=1e-9)  # identical preprocessing, same number
    pr = subprocess.run([sys.executable, "-m", "yyfast.predict", str(out / "last.pt"), str(root / "val"), "--json"],
                        capture_output=True, text=True, timeout=300)
    assert pr.returncode == 0, pr.stderr[-3000:]
    preds = json.loads(pr.stdout)["predictions"]
    assert len(preds) == 9
    correct = sum(p["topk"][0]["class"] == os.path.basename(os.path.dirname(p["file"])) for p in preds)
    assert correct / 9 == pytest.approx(acc, abs=1e-9)  # predict agrees with evaluate image for image
