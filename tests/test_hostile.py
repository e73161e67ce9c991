"""A hostile but realistic user's mistakes and attacks on the files and CLIs (issue 12, items 3-6).

Every scenario ends in one clear line on stderr and exit status 2 (never a traceback), runs no
code from a file, and leaves no stale or half-made state behind. The CLIs run as subprocesses, as
a user runs them; the data are a few generated PNGs in an image-folder tree.
"""
import os
import pickle
import shutil

import pytest
import torch

from helpers import assert_clear_error, cli  # noqa: F401  (moved there; other tests use them too)

from test_data import _png, make_tree
from yyfast.train import main as train_main
from yyfast.train.cache import load_dataset

CLASSES = ("cat", "dog", "emu")
# 12 train / 6 test images of 32x32, trained at 16x16 with batches of 4: a second per epoch.
TINY_RUN = ("--model", "yynet_small_16", "--epochs", "2", "--batch-size", "4", "--image-size", "16", "--no-progress",
            "--no-cache", "--threads", "1")


class WritesMarker:
    """Unpickling this creates the file ``path``: the stand-in for arbitrary code in a crafted file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("hostile") / "tree", classes=CLASSES, per_class=4)


@pytest.fixture(scope="module")
def stopped_run(data, tmp_path_factory):
    """One of two epochs done: a run to --resume (tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("runs") / "stopped"
    assert train_main(["--data", str(data), "--out", str(out), *TINY_RUN, "--ema-start", "0",
                       "--stop-after-epochs", "1"]) == 0
    return out


def copy_run(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# --- 3. no code runs from a file ------------------------------------------------------------------
def test_trainer_checkpoint_loads_with_plain_torch_load(stopped_run):
    ckpt = torch.load(stopped_run / "last.pt", weights_only=True)  # what torch.load(path) does by default
    assert ckpt["epoch"] == 1 and set(ckpt["rng"]) >= {"python", "numpy", "torch_cpu"}
    assert ckpt["data_fingerprint"]["files"] == 18


def test_checkpoint_from_before_plain_types_still_loads_safely(tmp_path):
    """yyfast-train-1 checkpoints held numpy's RNG tuple: read with numpy arrays allowed, nothing more."""
    import random

    import numpy as np

    from yyfast.train.checkpoint import load_checkpoint, rng_state, set_rng_state

    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch_cpu": torch.get_rng_state()}
    path = tmp_path / "old.pt"
    torch.save({"format": "yyfast-train-1", "rng": old}, path)
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(str(path))["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want
    set_rng_state(rng_state())  # the new plain form round-trips too
    assert isinstance(rng_state()["numpy"]["keys"], torch.Tensor)


def _checkpoint(config_name="yynet_small_16"):
    """A checkpoint as evaluate/predict read it: yynet_small_16 weights, ``config_name``'s config."""
    import yyfast

    model = yyfast.create_model("yynet_small_16", backend="reference", num_classes=len(CLASSES))
    config = yyfast.get_config(config_name, num_classes=len(CLASSES))
    return {"model": model.state_dict(), "config": config.to_dict(), "classes": list(CLASSES), "image_size": 16}


def test_malicious_checkpoint_runs_no_code_in_predict_evaluate_convert(data, tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({**_checkpoint(), "extra": WritesMarker(marker)}, evil)
    image = data / "test" / "cat" / "00.png"
    for proc in (cli("predict", evil, image), cli("evaluate", evil, "--data", data, "--no-cache"),
                 cli("convert", evil, tmp_path / "out.pt")):
        assert not marker.exists(), "code from the checkpoint ran"
        assert_clear_error(proc, "evil.pt", "refers to io.open")


def test_malicious_checkpoint_runs_no_code_on_resume(stopped_run, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    marker = tmp_path / "marker"
    torch.save({"extra": WritesMarker(marker)}, run / "last.pt")
    proc = cli("train", "--out", run, "--resume")
    assert not marker.exists(), "code from the checkpoint ran"
    assert_clear_error(proc, "last.pt", "refers to io.open")


def test_malicious_cifar_batch_runs_no_code(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": WritesMarker(marker), b"labels": [0]}))
    proc = cli("train", "--data", folder, "--out", tmp_path / "out", *TINY_RUN)
    assert_clear_error(proc, "data_batch_1", "not a CIFAR-10 python batch")
    assert not marker.exists(), "code from the data ran"


# --- 4. resumes that would brick or corrupt a run -------------------------------------------------
def test_abbreviated_options_are_refused(stopped_run):
    before = (stopped_run / "last.pt").read_bytes()
    proc = cli("train", "--out", stopped_run, "--resume", "--epoch", "3")
    assert_clear_error(proc, "--epoch")
    assert (stopped_run / "last.pt").read_bytes() == before


def test_resume_on_other_data_is_refused(stopped_run, data, tmp_path):
    # Same classes, same image counts, one image's content changed: only the content tells them apart.
    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "train" / "dog" / "01.png").write_bytes(_png((1, 2, 3)))
    proc = cli("train", "--out", stopped_run, "--resume", "--data", other)
    assert_clear_error(proc, "not the data this run was trained on", "content")
    fewer = tmp_path / "fewer"
    shutil.copytree(data, fewer)
    (fewer / "train" / "dog" / "01.png").unlink()
    assert_clear_error(cli("train", "--out", stopped_run, "--resume", "--data", fewer),
                       "not the data this run was trained on", "11 train")


def test_resume_on_a_world_size_with_another_schedule_is_refused(stopped_run, tmp_path):
    """12 images, global batch 4: 3 steps an epoch on any world size here; a checkpoint whose schedule was
    planned for another step count (another process count's partial-batch rule) must not resume into a
    learning-rate schedule that runs out before the last epoch ("Tried to step ... times")."""
    run = copy_run(stopped_run, tmp_path)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["scheduler"]["total_steps"] += 2  # as planned by a run whose epochs had one more step
    torch.save(ckpt, run / "last.pt")
    assert_clear_error(cli("train", "--out", run, "--resume"), "schedule was planned for", "process count")


def test_resume_without_a_checkpoint_says_so(stopped_run, tmp_path):
    typo = str(stopped_run) + "x"
    assert_clear_error(cli("train", "--out", typo, "--resume"), "no checkpoint", "--out")
    assert not os.path.exists(typo)


# --- 5. the decode cache follows content, not mtimes ----------------------------------------------
def test_cache_notices_an_image_overwritten_in_place(tmp_path):
    root = make_tree(tmp_path / "tree", classes=CLASSES)
    cache = str(tmp_path / "cache")
    first = load_dataset(str(root), cache_dir=cache, log=lambda *a: None)
    image, folder = root / "train" / "cat" / "00.png", root / "train" / "cat"
    stats = [(p, os.stat(p)) for p in (image, folder, folder.parent, root)]
    image.write_bytes(_png((0, 200, 0)))  # green for blue (0, 0, 200): a PNG of the same size
    for p, st in stats:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # cp -p / rsync -t keep the old times
    assert os.path.getsize(image) == stats[0][1].st_size
    again = load_dataset(str(root), cache_dir=cache, log=lambda *a: None)
    assert again.splits["train"].images[0, :, 0, 0].tolist() == [0, 200, 0]
    assert first.splits["train"].images[0, :, 0, 0].tolist() == [0, 0, 200]


# --- 6. ordinary mistakes: one clear line, exit status 2 ------------------------------------------
def test_convert_refuses_files_that_are_not_authors_checkpoints(stopped_run, tmp_path):
    text, png, truncated = tmp_path / "notes.txt", tmp_path / "photo.png", tmp_path / "cut.pt"
    text.write_text("hello\n")
    png.write_bytes(_png((9, 9, 9)))
    truncated.write_bytes((stopped_run / "last.pt").read_bytes()[:1000])
    out = tmp_path / "out.pt"
    assert_clear_error(cli("convert", stopped_run / "last.pt", out), "python -m yyfast.train checkpoint")
    for bad in (text, png, truncated):
        assert_clear_error(cli("convert", bad, out), bad.name, "not a readable")
    assert not out.exists()


def test_evaluate_on_a_checkpoint_whose_weights_are_another_presets(data, tmp_path):
    other = tmp_path / "other.pt"
    torch.save(_checkpoint(config_name="yynet_small_32"), other)
    assert_clear_error(cli("evaluate", other, "--data", data, "--no-cache"), "do not fit", "yynet_small_32")


def test_train_out_that_cannot_be_a_folder(data, tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    assert_clear_error(cli("train", "--data", data, "--out", existing, *TINY_RUN), "is a file")
    assert existing.read_text() == "keep me"
    assert_clear_error(cli("train", "--data", data, "--out", "/proc/yyfast-run", *TINY_RUN), "cannot be created")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks --backend triton on a machine without a GPU")
def test_train_backend_that_cannot_run_here(data, tmp_path):
    out = tmp_path / "out"
    env = {"TRITON_INTERPRET": "0"}  # as a user's shell has it (conftest sets 1 for the op tests)
    assert_clear_error(cli("train", "--data", data, "--out", out, *TINY_RUN, "--backend", "triton", env=env),
                       "--backend triton")
    assert not out.exists()


def test_no_empty_out_folder_after_a_data_error(tmp_path):
    out = tmp_path / "new" / "run"
    assert_clear_error(cli("train", "--data", tmp_path / "missing", "--out", out, *TINY_RUN),
                       "no such file or directory")
    assert not (tmp_path / "new").exists()


def test_image_size_zero_is_refused(stopped_run, data):
    image = data / "test" / "cat" / "00.png"
    assert_clear_error(cli("predict", stopped_run / "last.pt", image, "--image-size", "0"), "--image-size")
    assert_clear_error(cli("evaluate", stopped_run / "last.pt", "--data", data, "--image-size", "0"), "--image-size")


def test_temporary_files_of_a_killed_write_are_removed(stopped_run, data, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    for name in (".last.pt.tmp-k1ll3d", ".summary.json.tmp-abc123"):
        (run / name).write_bytes(b"half a file")
    proc = cli("train", "--out", run, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [p for p in os.listdir(run) if ".tmp-" in p]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_export_onnx_to_an_unwritable_path(tmp_path):
    import yyfast

    model = yyfast.create_model("yynet_small_16", backend="reference").eval()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for path in ("/proc/yyfast/model.onnx", str(blocker / "model.onnx")):
        with pytest.raises(ValueError, match=r"path=.* cannot be written") as info:
            yyfast.export_onnx(model, path, check=False)
        assert "\n" not in str(info.value)
