"""Two "nodes" of two processes each (four gloo ranks on this machine, one torchrun per node, c10d
rendezvous, a node-local cache folder each): the run trains with --sync-bn over all four, each node
gets its decoded cache, one last.pt (and best.pt) is written and only global rank 0 logs. (That LOCAL_RANK 0
decodes first and its node's other ranks then read the file is in ``sources.cached_source``; this
test does not count decodes.)"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from test_stream import make_jpeg_tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_two_processes(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend for torch.distributed")
    root = make_jpeg_tree(tmp_path / "tree", train=6, val=2)
    out, port = tmp_path / "run", _free_port()
    nodes = []
    for node in range(2):
        cache = tmp_path / f"cache-node{node}"  # a node-local disk each
        env = dict(os.environ, OMP_NUM_THREADS="1", YYFAST_CACHE_DIR=str(cache))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "2",
               "--node_rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "yy-test", "-m", "yyfast.train", "--data", str(root), "--model", "yynet_small_16",
               "--out", str(out), "--data-mode", "cache", "--epochs", "1", "--batch-size", "8", "--image-size", "16",
               "--backend", "cuda", "--sync-bn", "--no-progress"]
        nodes.append((cache, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    logs = [p.communicate(timeout=600)[0].decode(errors="replace") for _, p in nodes]
    for (_, p), log in zip(nodes, logs):
        assert p.returncode == 0, log[-4000:]
    for cache, _ in nodes:  # each node has its own decoded cache
        assert len([f for f in os.listdir(cache) if f.endswith(".npz") or not f.startswith(".")]) == 1, \
            os.listdir(cache)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 4 and summary["finished"] and summary["num_train"] == 18
    assert sorted(p for p in os.listdir(out) if p.endswith(".pt")) == ["best.pt", "last.pt"]  # by rank 0 only
    assert sum(log.count("epoch   1/1") for log in logs) == 1  # only global rank 0 logs
