"""python -m yyfast.predict: checkpoints of every kind, batching, top-k, JSON, unreadable images."""
import json
import os
import runpy
import sys
import tarfile
import warnings

import pytest
import torch

import yyfast
from inference_helpers import one_thread, trained_like_
from yyfast.predict import CIFAR10_CLASSES, load_image, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARBALLS = [os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar.gz"), "/work/shared/data/cifar10-jpeg.tar.gz"]

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _write_images(folder, count=5):
    """Real CIFAR-10 JPEGs (the first ones in the shared tarball), or PIL-drawn ones without it."""
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    written = []
    tarball = next((t for t in TARBALLS if os.path.isfile(t)), None)
    if tarball:
        with tarfile.open(tarball, "r|gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".jpg"):
                    sub = "sub" if len(written) % 2 else ""
                    path = os.path.join(folder, sub, f"{len(written)}_{os.path.basename(member.name)}")
                    with open(path, "wb") as fh:
                        fh.write(tar.extractfile(member).read())
                    written.append(path)
                    if len(written) == count:
                        break
    else:
        from PIL import Image

        for k in range(count):
            path = os.path.join(folder, "sub" if k % 2 else "", f"{k}.png")
            Image.fromarray((torch.rand(40, 24, 3) * 255).byte().numpy()).save(path)
            written.append(path)
    return sorted(written)


def _model(num_classes=10, seed=0):
    return trained_like_(yyfast.create_model("yynet_small_16", backend="reference", act="silu",
                                             num_classes=num_classes), seed).eval()


def _expected_probs(model, files, size=32):
    from yyfast.predict import CIFAR10_MEAN, CIFAR10_STD

    x = torch.stack([load_image(f, size, CIFAR10_MEAN, CIFAR10_STD) for f in files]).double()
    with torch.no_grad():
        return torch.softmax(model.double()(x), dim=1)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("images"))
    return folder, _write_images(folder)


@pytest.fixture(scope="module")
def trainer_ckpt(tmp_path_factory):
    """A checkpoint shaped like python -m yyfast.train's last.pt, with distinct EMA weights."""
    raw, ema = _model(seed=0), _model(seed=1)
    path = str(tmp_path_factory.mktemp("ckpt") / "last.pt")
    torch.save({"epoch": 3, "model": raw.state_dict(), "config": raw.config.to_dict(),
                "args": {"model": "yynet_small_16", "act": "silu"}, "classes": list(CIFAR10_CLASSES),
                "image_size": 32, "ema": {"module": ema.state_dict(), "started": True, "avg_weight": 0.1}}, path)
    return path, raw, ema


def test_trainer_checkpoint_json_topk_matches_the_model(capsys, images, trainer_ckpt):
    folder, files = images
    path, raw, _ = trainer_ckpt
    code, out, err = _run(capsys, path, folder, "--json", "--topk", "3", "--batch-size", "2", "--device", "cpu")
    assert code == 0
    assert "5/5" in err, "5 images in batches of 2 should show a progress bar on stderr"
    result = json.loads(out)
    assert sorted(p["file"] for p in result["predictions"]) == files  # recursive, every image once
    expected = _expected_probs(raw, [p["file"] for p in result["predictions"]])
    for row, probs in zip(result["predictions"], expected):
        top = probs.topk(3)
        assert [t["index"] for t in row["topk"]] == top.indices.tolist()
        assert [t["class"] for t in row["topk"]] == [CIFAR10_CLASSES[i] for i in top.indices.tolist()]
        assert torch.allclose(torch.tensor([t["prob"] for t in row["topk"]], dtype=torch.float64), top.values,
                              atol=1e-5)
    assert result["weights"] == "model" and result["skipped"] == []


def test_ema_weights(capsys, images, trainer_ckpt):
    folder, files = images
    path, raw, ema = trainer_ckpt
    code, out, _ = _run(capsys, path, files[0], "--ema", "--json", "--topk", "10")
    assert code == 0
    row = json.loads(out)["predictions"][0]
    probs = torch.tensor([t["prob"] for t in sorted(row["topk"], key=lambda t: t["index"])], dtype=torch.float64)
    assert torch.allclose(probs, _expected_probs(ema, files[:1])[0], atol=1e-5)
    assert not torch.allclose(probs, _expected_probs(raw, files[:1])[0], atol=1e-3), "EMA weights were not used"


def test_bare_state_dict_needs_model_name_and_classes_file(capsys, tmp_path, images):
    folder, files = images
    model = _model(num_classes=3)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    code, _, err = _run(capsys, path, folder)
    assert code == 2 and "--model" in err
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    code, out, _ = _run(capsys, path, files[1], "--model", "yynet_small_16", "--act", "silu", "--num-classes", "3",
                        "--classes", names)
    assert code == 0 and out.startswith(files[1] + ": ")
    assert {c.split()[0] for c in out.split(": ", 1)[1].split(", ")} == {"cat", "dog", "bird"}
    code, out, _ = _run(capsys, path, files[1], "--model", "yynet_small_16", "--act", "silu", "--num-classes", "3",
                        "--json")
    assert code == 0 and {t["class"] for t in json.loads(out)["predictions"][0]["topk"]} == {"0", "1", "2"}
    code, _, err = _run(capsys, path, files[1], "--model", "yynet_small_16", "--num-classes", "3", "--classes",
                        names, "--topk", "2", "--act", "gelu", "--fusion", "nope")
    assert code == 2 and "fusion" in err


def test_unreadable_image_is_named_and_skippable(capsys, tmp_path, images, trainer_ckpt):
    folder, files = images
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    code, _, err = _run(capsys, trainer_ckpt[0], files[0], bad)
    assert code == 2 and str(bad) in err
    code, out, err = _run(capsys, trainer_ckpt[0], files[0], bad, "--skip-bad", "--json")
    result = json.loads(out)
    assert code == 0 and [p["file"] for p in result["predictions"]] == [files[0]]
    assert result["skipped"][0]["file"] == str(bad) and str(bad) in result["skipped"][0]["error"]
    code, _, err = _run(capsys, trainer_ckpt[0], tmp_path / "missing")
    assert code == 2 and "missing" in err


def test_module_entry_point(capsys, monkeypatch, images, trainer_ckpt):
    """``python -m yyfast.predict`` (run in-process with runpy: a fresh interpreter costs seconds)."""
    folder, _ = images
    monkeypatch.setattr(sys, "argv", ["yyfast.predict", trainer_ckpt[0], folder, "--topk", "1", "--no-progress"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: yyfast.predict is already imported
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("yyfast.predict", run_name="__main__")
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(line.split(": ")[1].split()[0] in CIFAR10_CLASSES for line in lines)


def test_authors_checkpoint_is_converted(capsys, tmp_path, images):
    from authors_model import AuthorsCifarYYNet, randomise_

    folder, files = images
    authors = randomise_(AuthorsCifarYYNet(16)).eval()
    path = tmp_path / "authors.pt"
    torch.save(authors.state_dict(), path)
    code, out, _ = _run(capsys, path, files[0], "--json", "--topk", "10")
    assert code == 0
    row = json.loads(out)["predictions"][0]
    probs = torch.tensor([t["prob"] for t in sorted(row["topk"], key=lambda t: t["index"])], dtype=torch.float64)
    from yyfast.predict import CIFAR10_MEAN, CIFAR10_STD

    x = load_image(files[0], 32, CIFAR10_MEAN, CIFAR10_STD)[None].double()
    with torch.no_grad():
        expected = torch.softmax(authors.double()(x), dim=1)[0]
    assert json.loads(out)["weights"] == "authors"
    assert torch.allclose(probs, expected, atol=1e-5)
