"""The trainer's outputs beyond last.pt (issue 16): best.pt, --export, --log-interval, --tensorboard.

One tiny finished run (a few generated PNGs, 2 epochs at 16x16) run as a subprocess with stdout
going to a pipe, as in a log file; the tests read what it wrote.
"""
import importlib.util
import json
import os

import pytest
import torch

from helpers import assert_clear_error, cli
from test_hostile import CLASSES, TINY_RUN
from test_data import make_tree
from yyfast.evaluate import evaluate_checkpoint
from yyfast.train.loop import best_entry


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("outputs") / "tree", classes=CLASSES, per_class=4)


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "finished"
    proc = cli("train", "--data", data, "--out", out, *TINY_RUN, "--ema-start", "0", "--log-interval", "2",
               "--export", "safetensors", "--export", "onnx")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_best_entry_prefers_the_better_reported_model():
    history = [{"epoch": 1, "test_acc": 0.5, "ema_test_acc": None},
               {"epoch": 2, "test_acc": 0.6, "ema_test_acc": 0.7},
               {"epoch": 3, "test_acc": 0.7, "ema_test_acc": 0.65},  # ties the best: the earlier epoch stays
               {"epoch": 4, "test_acc": 0.4, "ema_test_acc": 0.2}]
    assert best_entry([]) is None
    assert best_entry(history[:1]) == {"source": "raw", "epoch": 1, "test_acc": 0.5}
    assert best_entry(history) == {"source": "ema", "epoch": 2, "test_acc": 0.7}
    history[2]["test_acc"] = 0.8
    assert best_entry(history) == {"source": "raw", "epoch": 3, "test_acc": 0.8}


def test_best_pt_holds_the_best_weights_and_says_which(finished_run, data):
    out, _ = finished_run
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = best_entry(history)
    best = torch.load(out / "best.pt", weights_only=True)  # plain types, like last.pt
    assert best["best"] == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_source"] == expected["source"] and summary["best_checkpoint"] == expected
    # Its "model" weights reproduce the recorded accuracy on the same test split.
    result = evaluate_checkpoint(str(out / "best.pt"), str(data), image_size=16, use_cache=False, device="cpu")
    assert result["raw"]["acc"] == pytest.approx(expected["test_acc"], abs=1e-6)
    assert result["ema"] is None  # best.pt is weights only, not a run to resume


def test_export_safetensors_writes_the_best_weights(finished_run):
    from yyfast import YYNet

    out, proc = finished_run
    model = YYNet.from_pretrained(out / "export")
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key
    assert "exported" in proc.stdout and (out / "export" / "model.onnx").is_file()


def test_log_interval_prints_step_lines_when_stdout_is_not_a_terminal(finished_run):
    _, proc = finished_run
    # 12 images in batches of 4: 3 steps per epoch, a line at step 2 and at the epoch's last step
    lines = [line for line in proc.stdout.splitlines() if " step " in line]
    assert [line.split()[:4] for line in lines] == [["epoch", e, "step", s] for e in "12" for s in ("2/3", "3/3")]


def test_tensorboard_missing_is_one_clear_line(data, tmp_path):
    # A shadowing package that fails to import stands in for a machine without tensorboard.
    shadow = tmp_path / "shadow" / "tensorboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    proc = cli("train", "--data", data, "--out", tmp_path / "run", *TINY_RUN, "--tensorboard",
               env={"PYTHONPATH": path})
    assert_clear_error(proc, "--tensorboard", "pip install tensorboard")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is an optional extra (requirements.txt installs it for CI) "
                           "and is not installed")
def test_tensorboard_writes_event_files(data, tmp_path):
    proc = cli("train", "--data", data, "--out", tmp_path / "run", *TINY_RUN, "--tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))



# --- python -m yyfast.export: a run's checkpoint, its exported folder, a preset -------------------
def test_export_cli_onnx_from_a_training_checkpoint(finished_run, tmp_path):
    import onnxruntime as ort

    from yyfast.predict import load_model

    out, _ = finished_run
    proc = cli("export", out / "best.pt", tmp_path / "m.onnx", "--image-size", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["dynamic_batch"] and report["max_rel_err"] < 1e-4
    x = torch.randn(5, 3, 16, 16)  # a batch size the export never saw
    (logits,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = load_model(str(out / "best.pt")).model(x)
    assert torch.allclose(torch.from_numpy(logits), ref, rtol=1e-3, atol=1e-4)


def test_export_cli_torch_export_from_a_pretrained_folder(finished_run, tmp_path):
    from yyfast import YYNet

    out, _ = finished_run
    proc = cli("export", out / "export", tmp_path / "m.pt2", "--image-size", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(program(x), YYNet.from_pretrained(out / "export").eval()(x), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("args, needles", [
    (("yynet_small_16", "m.bin"), ("m.bin", ".onnx or .pt2")),
    (("no_such_model", "m.onnx"), ("no_such_model", "yynet_small_16")),
    (("yynet_small_16", "m.onnx", "--batch-size", "0"), ("--batch-size",)),
])
def test_export_cli_mistakes_are_one_line(args, needles, tmp_path):
    assert_clear_error(cli("export", *[tmp_path / a if a.startswith("m.") else a for a in args]), *needles)


# --- evaluate and predict write files -------------------------------------------------------------
def test_evaluate_reports_topk_per_class_and_writes_files(finished_run, data, tmp_path):
    import csv

    out, _ = finished_run
    files = [tmp_path / n for n in ("r.json", "r.csv", "cm.png")]
    proc = cli("evaluate", out / "last.pt", "--data", data, "--no-cache", "--device", "cpu",
               "--output", files[0], "--output", files[1], "--confusion", files[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top-3" in proc.stdout  # 3 classes: top-5 is clipped to top-3
    r = json.loads(files[0].read_text())
    for name in ("raw", "ema"):
        m = r[name]
        cm = torch.tensor(m["confusion"])
        assert cm.shape == (3, 3) and int(cm.sum()) == r["num_images"] == 6
        assert m["top1"] == pytest.approx(m["acc"]) and m["topk"] == 3 and m["top3"] == 1.0
        for i, cls in enumerate(CLASSES):
            assert m["per_class"][cls] == {"acc": int(cm[i, i]) / int(cm[i].sum()), "images": int(cm[i].sum())}
    rows = list(csv.DictReader(files[1].open()))
    assert [(row["model"], row["class"]) for row in rows] == [(n, c) for n in ("raw", "ema") for c in CLASSES]
    assert files[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_writes_csv_and_json(finished_run, data, tmp_path):
    import csv

    out, _ = finished_run
    proc = cli("predict", out / "best.pt", data / "test", "--topk", "2", "--no-progress", "--device", "cpu",
               "--output", tmp_path / "p.csv", "--output", tmp_path / "p.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "p.json").read_text())
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(report["predictions"]) == 6 and len(rows) == 12
    first = report["predictions"][0]
    assert [(r["file"], r["class"]) for r in rows[:2]] == [(first["file"], t["class"]) for t in first["topk"]]


@pytest.mark.parametrize("module", ["evaluate", "predict"])
def test_output_needs_a_known_suffix(module, tmp_path):
    args = ("x.pt", "--data", "d") if module == "evaluate" else ("x.pt", "img.png")
    assert_clear_error(cli(module, *args, "--output", tmp_path / "r.txt"), "--output", ".json or .csv")
