"""Smoke tests of the benchmark scripts: they run with tiny settings, write the documented JSON
schema, and report.py splices a README section and detects a stale one. Nothing here asserts
a speed: the numbers are measured by the benchmarks, not by tests."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


throughput = _load("throughput")
kernels = _load("kernels")
report = _load("report")
common = _load("common")

TINY = ["--model", "yynet_small_16", "--batch", "2", "--reps", "1", "--warmup", "0", "--no-progress",
        "--device", "cpu", "--impls", "eager,yyfast"]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """Both benchmarks run once with tiny settings; their files feed the schema and report tests."""
    out = tmp_path_factory.mktemp("results")
    assert throughput.main(TINY + ["--json", str(out / "cpu-2core-2026-01-01-throughput.json"),
                                   "--md", str(out / "t.md"), "--plot", str(out / "t.png")]) == 0
    assert kernels.main(TINY + ["--json", str(out / "cpu-2core-2026-01-01-kernels.json"), "--copy-mb", "8",
                                "--shapes", "64x8x8/s2,64x4x4/s1,16x16x16"]) == 0
    return out


def _check_header(doc):
    for key in ("device", "versions", "commit", "date", "results", "skipped"):
        assert key in doc, key
    assert doc["versions"]["torch"]
    for s in doc["skipped"]:
        assert set(s) == {"what", "reason"} and s["reason"]


def test_throughput_json_schema(results_dir):
    doc = json.loads((results_dir / "cpu-2core-2026-01-01-throughput.json").read_text())
    _check_header(doc)
    rows = doc["results"]
    assert {(r["impl"], r["mode"]) for r in rows} >= {("eager", "train"), ("eager", "eval")}
    for r in rows:
        assert {"impl", "mode", "dtype", "batch", "ms", "images_per_s", "peak_mem_mb", "speedup_vs_eager"} <= set(r)
        assert r["ms"] > 0 and r["batch"] == 2 and r["dtype"] == "fp32"
        assert r["images_per_s"] == pytest.approx(2 / r["ms"] * 1e3, rel=1e-2)
        assert r["peak_mem_mb"] is None  # CPU: no peak counter, reported as null
        if r["impl"] == "eager":
            assert r["speedup_vs_eager"] == 1.0
    # every non-reference backend is either measured or skipped with its reason
    named = {r["impl"] for r in rows} | {s["what"] for s in doc["skipped"]}
    assert {"yyfast-cuda", "yyfast-triton"} <= {n.split(" ")[0] for n in named}
    assert (results_dir / "t.md").read_text().startswith("## Throughput")
    assert (results_dir / "t.png").stat().st_size > 1000


def test_kernels_json_schema(results_dir):
    doc = json.loads((results_dir / "cpu-2core-2026-01-01-kernels.json").read_text())
    _check_header(doc)
    assert doc["copy_gb_per_s"] > 0
    rows = doc["results"]
    eager = [r for r in rows if r["impl"] == "eager"]
    assert {(r["op"], r["shape"]) for r in eager} == {
        ("dw_bn_act_se", "64x8x8/s2"), ("dw_bn_act_se", "64x4x4/s1"), ("yinyang_fuse", "16x16x16")}
    assert {r["mode"] for r in eager} == {"fwd-eval", "fwd-train", "fwd+bwd"}
    assert len(eager) == 9
    for r in rows:
        assert r["gb_per_s"] == pytest.approx(r["floor_bytes"] / (r["ms"] * 1e-3) / 1e9, rel=1e-2)
        assert r["pct_of_copy_bw"] == pytest.approx(100 * r["gb_per_s"] / doc["copy_gb_per_s"], rel=1e-2)


def test_model_shapes_are_the_networks():
    spans, fuses = kernels.model_shapes("yynet_small_64")
    # Small-64 spans: hidden 256 channels at 32x32 (stride 1 and 2), 16x16, 8x8 (stride 2), 4x4
    assert sorted(spans) == sorted([(256, 32, 32, 2), (256, 16, 16, 1), (256, 32, 32, 1), (256, 8, 8, 2),
                                    (256, 4, 4, 1)])
    assert fuses == [(64, 16, 16)]


def test_byte_floor_formulas():
    # span 2x8x4x4 stride 2 -> 2x8x2x2, SE hidden 2, fp32: x 256, y 64 elements; params 9C+2C+2C+2*C*h+h+C
    span_floor_bytes = kernels.OP_MODULES["dw_bn_act_se"].floor_bytes
    fuse_floor_bytes = kernels.OP_MODULES["yinyang_fuse"].floor_bytes
    params = 72 + 16 + 16 + 16 + 2 + 16 + 8
    assert span_floor_bytes(2, 8, 4, 4, 2, 2, 4, "fwd-eval") == 4 * (256 + 64) + 4 * params
    assert span_floor_bytes(2, 8, 4, 4, 2, 2, 4, "fwd-train") == 4 * (256 + 64) + 4 * (params + 16)
    grads = params - 16
    assert span_floor_bytes(2, 8, 4, 4, 2, 2, 2, "fwd+bwd") == 2 * (512 + 128) + 4 * (params + 16 + grads)
    assert fuse_floor_bytes(2, 3, 5, 7, 2, "fwd-eval") == 2 * 3 * 210
    assert fuse_floor_bytes(2, 3, 5, 7, 2, "fwd+bwd") == 2 * 6 * 210


def test_bad_arguments_are_rejected(capsys):
    assert throughput.main(["--batch", "0", "--device", "cpu"]) == 2
    assert "--train-batch" in capsys.readouterr().err
    assert throughput.main(["--impls", "turbo", "--device", "cpu"]) == 2
    assert kernels.main(["--model", "nope", "--device", "cpu"]) == 2
    assert kernels.main(["--model", "yynet_small_16", "--device", "cpu", "--shapes", "1x2x3", "--no-progress"]) == 2
    assert "64x4x4/s1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="reps"):
        common.time_fn(lambda: None, common.pick_device("cpu"), warmup=0, reps=0)


README = "# yyfast\n\nintro text\n\n## Results\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nafter\n"


def test_report_regenerates_and_detects_staleness(results_dir, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = ["--readme", str(readme), "--results", str(results_dir)]
    assert report.main(args + ["--check"]) == 1  # "old" is stale
    assert readme.read_text() == README  # --check writes nothing
    assert report.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# yyfast\n\nintro text\n\n## Results\n\n<!-- results:start -->\n")
    assert text.endswith("<!-- results:end -->\n\nafter\n")
    section = text.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    device = json.loads((results_dir / "cpu-2core-2026-01-01-throughput.json").read_text())["device"]
    assert f"### {device}" in section and "| eager | train | fp32 | 2 |" in section
    assert "#### Fused ops" in section and "dw_bn_act_se" in section
    assert report.main(args + ["--check"]) == 0
    # a newer result file for the same device makes the section stale again
    doc = json.loads((results_dir / "cpu-2core-2026-01-01-throughput.json").read_text())
    doc["date"] = "2099-01-02"  # newer than the fixture's (today's) date
    doc["results"][0]["ms"] *= 2
    newer = results_dir / "cpu-2core-2026-01-02-throughput.json"
    newer.write_text(json.dumps(doc))
    try:
        assert report.main(args + ["--check"]) == 1
        assert report.main(args) == 0 and "2099-01-02" in readme.read_text()
    finally:
        newer.unlink()


def test_report_fails_clearly_without_markers(results_dir, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    assert report.main(["--readme", str(readme), "--results", str(results_dir)]) == 2
    assert "results:start" in capsys.readouterr().err
    assert readme.read_text() == "# no markers here\n"
    readme.write_text("<!-- results:end -->\n<!-- results:start -->\n")
    assert report.main(["--readme", str(readme), "--results", str(results_dir)]) == 2


def test_onnxruntime_row_runs_our_export_eval_only(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    out = tmp_path / "ort.json"
    args = ["--model", "yynet_small_16", "--batch", "3", "--reps", "1", "--warmup", "0", "--no-progress",
            "--device", "cpu", "--impls", "eager,onnxruntime", "--json", str(out)]
    assert throughput.main(args) == 0
    doc = json.loads(out.read_text())
    rows = {(r["impl"], r["mode"]) for r in doc["results"]}
    # eval only (the export is an inference graph): no training row, and nothing skipped
    assert ("onnxruntime", "eval") in rows and ("onnxruntime", "train") not in rows, rows
    assert not [s for s in doc["skipped"] if s["what"].startswith("onnxruntime")], doc["skipped"]


def test_onnxruntime_skipped_with_reason_off_the_cpu():
    reason = throughput.onnxruntime_unavailable(throughput.torch.device("cuda"))
    assert reason and "CPU" in reason


def test_cpu_defaults_and_goals_compare_optimized_with_onnxruntime():
    cfg = throughput.default_config(throughput.torch.device("cpu"))
    assert cfg.eval_batches == [1, 16, 256] and "onnxruntime" in cfg.impls
    R = throughput.Result
    results = []
    for batch, ort_ms, opt_ms in ((1, 8.0, 6.0), (16, 100.0, 90.0), (256, 1000.0, 1500.0)):
        results += [R("onnxruntime", "eval", "fp32", batch, ort_ms, 1.0, None, None, 1),
                    R("optimized", "eval", "fp32", batch, opt_ms, 1.0, None, None, 1)]
    goals = {g.name: g for g in throughput.compute_goals(results, throughput.torch.device("cpu"), "yynet_small_64")}
    for batch, ort_ms, opt_ms in ((1, 8.0, 6.0), (16, 100.0, 90.0), (256, 1000.0, 1500.0)):
        g = goals[f"CPU eval fp32 b{batch}, optimized vs onnxruntime"]
        assert g.measured == pytest.approx(ort_ms / opt_ms) and g.met == (ort_ms / opt_ms >= 1.2)
    # a run without the onnxruntime rows says so instead of inventing a ratio
    goals = throughput.compute_goals(results[1::2], throughput.torch.device("cpu"), "yynet_small_64")
    assert all(g.measured is None and "not measured" in g.note for g in goals if "onnxruntime" in g.name)


def test_cpu_eval_rows_are_timed_round_robin(monkeypatch):
    """The CPU eval rows of one batch alternate by short blocks (a back-to-back order fails), each gets
    its own median, and training rows stay on their own."""
    calls = []
    impls = [throughput.Impl("eager", "eager", "reference"),
             throughput.Impl("optimized", "optimized", "auto", optimized=True),
             throughput.Impl("onnxruntime", "onnxruntime", "reference", onnx=True)]
    monkeypatch.setattr(throughput, "list_impls", lambda cfg, device, skipped: impls)

    def fake_step(impl, cfg, mode, dtype, batch, device):
        return lambda: calls.append((impl.name, mode, batch))
    monkeypatch.setattr(throughput, "build_step", fake_step)
    monkeypatch.setattr(throughput, "SWITCH_PAUSE_S", 0.0)
    monkeypatch.setattr(throughput, "BLOCK_CALLS", 2)
    cfg = throughput.Config(device="cpu", train_batches=[4], eval_batches=[1, 2], dtypes=["fp32"],
                            impls=["eager", "optimized", "onnxruntime"], warmup=1, reps=3, budget_s=None)
    doc = throughput.run(cfg, progress=False)
    names = [c[0] for c in calls]
    evals = [c for c in calls if c[1] == "eval"]
    for batch in (1, 2):
        order = [name for name, _, b in evals if b == batch]
        # one warm-up round; then rounds of blocks (one settling call + up to BLOCK_CALLS=2 timed) until
        # each has reps=3 timed calls: blocks of 2, then of 1
        turns = ["eager", "optimized", "onnxruntime"]
        assert order == turns + [t for t in turns for _ in range(3)] + [t for t in turns for _ in range(2)], order
    assert names[:4] == ["eager"] * 4  # training: eager alone (warm-up + 3 reps), not interleaved
    rows = {(r["impl"], r["mode"], r["batch"]): r for r in doc["results"]}
    assert len(rows) == 1 + 2 * 3 and all(r["reps"] == 3 for r in rows.values())
    assert rows[("optimized", "eval", 2)]["speedup_vs_eager"] is not None
