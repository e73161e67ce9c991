"""The trainer's parts: batched augmentation, EMA, recipe rules, atomic files, RNG state, seeds."""
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yyfast.train.augment import CIFAR10_MEAN, CIFAR10_STD, BatchAugment
from yyfast.train.checkpoint import atomic_write, atomic_write_json, rng_state, set_rng_state
from yyfast.train.distributed import World, shard
from yyfast.train.ema import ModelEMA
from yyfast.train.engine import steps_per_epoch, stream_seed
from yyfast.train.recipe import build_optimizer, build_scheduler, choose_precision, update_weight_decay


def _images(n=16, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_augmentation_matches_a_per_image_reference():
    x = _images()
    aug = BatchAugment(crop=8, padding=4, brightness=0.3)  # a large jitter so clamping is exercised
    out = aug.train(x, torch.Generator().manual_seed(5))
    # The same random stream, drawn in the documented order, applied one image at a time.
    g = torch.Generator().manual_seed(5)
    oy, ox = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    factor = 1 + (torch.rand(16, generator=g) * 2 - 1) * 0.3
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    for i in range(16):
        img = F.pad(x[i:i + 1].float() / 255, (4, 4, 4, 4), mode="reflect")[0]
        img = img[:, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        if flip[i]:
            img = img.flip(2)
        img = ((img * factor[i]).clamp(0, 1) - mean) / std
        torch.testing.assert_close(out[i], img, rtol=0, atol=1e-6)
    assert 0 < int(flip.sum()) < 16 and len(set(oy.tolist())) > 3


def test_augmentation_is_reproducible_and_eval_only_normalizes():
    x = _images(size=32)
    aug = BatchAugment(crop=32, channels_last=True)
    a = aug.train(x, torch.Generator().manual_seed(1))
    b = aug.train(x, torch.Generator().manual_seed(1))
    c = aug.train(x, torch.Generator().manual_seed(2))
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b) and not torch.equal(a, c)
    e = aug.eval(x)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(e, (x.float() / 255 - mean) / std)


def test_ema_starts_at_its_step_and_averages_params_and_bn_stats():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, start_step=2, avg_weight=0.1)
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def perturb():
        with torch.no_grad():
            for v in model.state_dict().values():
                v.add_(1 if not v.is_floating_point() else torch.randn_like(v))

    perturb()
    ema.update(model, 1)  # before the start: nothing happens
    assert ema.model() is None
    assert all(torch.equal(v, start[k]) for k, v in ema.module.state_dict().items())
    ema.update(model, 2)  # the start: a copy
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ema.module.state_dict().items())
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    perturb()
    ema.update(model, 3)
    for k, v in ema.module.state_dict().items():
        cur = model.state_dict()[k]
        want = cur if not cur.is_floating_point() else 0.1 * before[k] + 0.9 * cur
        torch.testing.assert_close(v, want, rtol=1e-6, atol=1e-7)
    assert "running_var" in str(list(ema.module.state_dict()))
    restored = ModelEMA(model, start_step=0)
    restored.load_state_dict(ema.state_dict())
    assert restored.started and restored.start_step == 2


def test_recipe_optimizer_schedule_and_weight_decay_rule():
    p = nn.Parameter(torch.zeros(3))
    opt = build_optimizer([p], 1e-2)
    group = opt.param_groups[0]
    assert group["amsgrad"] is True and group["weight_decay"] == pytest.approx(1e-2 * 1.56)
    sched = build_scheduler(opt, 1e-2, total_steps=20)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 25)  # OneCycle starts at max_lr / 25
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)  # the peak: step 0.3 * 20 - 1
    wd = update_weight_decay(opt)
    assert wd == pytest.approx(1e-2 * 1.56) and opt.param_groups[0]["weight_decay"] == wd
    with pytest.raises(ValueError, match="2 steps"):
        build_scheduler(opt, 1e-2, total_steps=1)


def test_precision_choice():
    cpu = torch.device("cpu")
    assert choose_precision("auto", cpu).dtype is None
    assert choose_precision("bf16", cpu).dtype is torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        choose_precision("fp16", cpu)
    with pytest.raises(ValueError, match="amp="):
        choose_precision("fp8", cpu)


def test_steps_shards_and_seeds():
    assert steps_per_epoch(50, 16, World()) == 4  # 3 full batches + one of 2
    assert steps_per_epoch(49, 16, World()) == 3  # a last batch of 1 cannot train BatchNorm
    assert steps_per_epoch(52, 16, World(0, 2)) == 4  # 26 a rank, 8 a batch: 3 full and one of 2
    assert steps_per_epoch(50, 16, World(0, 2)) == 3  # 25 a rank: the last batch would hold 1
    idx = torch.arange(11)
    parts = [shard(idx, World(r, 2)) for r in range(2)]
    assert parts[0].tolist() == [0, 2, 4, 6, 8] and parts[1].tolist() == [1, 3, 5, 7, 9]
    seeds = {stream_seed(s, e, k) for s in range(3) for e in range(40) for k in range(3)}
    assert len(seeds) == 3 * 40 * 3 and all(0 <= s < 2 ** 63 for s in seeds)


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "last.pt"
    atomic_write_json(str(path), {"epoch": 1})
    old = path.read_bytes()

    def broken(fh):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), broken)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["last.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0600


def test_kill_9_during_a_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"complete checkpoint")
    code = ("import sys, time; from yyfast.train.checkpoint import atomic_write\n"
            "def slow(fh):\n    fh.write(b'x' * 4096); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
            f"atomic_write({str(path)!r}, slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"complete checkpoint"
