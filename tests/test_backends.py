"""``yyfast.backends()`` (yyfast/availability.py) tells the truth, and unavailable backends fail clearly."""
import subprocess
import sys

import pytest
import torch

import yyfast
import yyfast.availability as be

KEYS = {"available", "built", "devices", "reason"}


def _fresh():
    be._cached.cache_clear()
    return yyfast.backends()


def test_report_shape():
    report = _fresh()
    assert set(report) == {"reference", "triton", "cuda"}
    for name, info in report.items():
        assert KEYS <= set(info), name
        if not info["available"]:
            assert isinstance(info["reason"], str) and info["reason"].endswith(".")
    assert report["reference"]["available"] and report["reference"]["built"]


def test_cuda_backend_reflects_the_extension():
    report = _fresh()["cuda"]
    try:
        import yyfast._C as ext
    except ImportError:
        assert not report["built"] and "yyfast._C" in report["reason"]
        return
    assert report["built"]
    assert report["cuda_kernels"] == ext.cuda_built()
    assert ("cuda" in report["devices"]) == (ext.cuda_built() and torch.cuda.is_available())
    if torch.version.cuda is not None and not torch.cuda.is_available():
        # A CUDA torch on a machine without a GPU: built, CPU twins usable, the reason says why no GPU.
        assert "no GPU" in report["reason"]


def test_missing_extension_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "yyfast._C", None)  # makes `import yyfast._C` raise ImportError
    report = _fresh()["cuda"]
    assert report == {"available": False, "built": False, "devices": [], "reason": report["reason"]}
    assert "not built" in report["reason"]
    with pytest.raises(RuntimeError, match="backend='cuda' is not available on this machine"):
        yyfast.create_model("yynet_small_16", backend="cuda")
    be._cached.cache_clear()


def test_gpu_visible_with_cuda_build(monkeypatch):
    """With a (simulated) GPU and CUDA kernels compiled in, the cuda backend lists the GPU."""
    ext = pytest.importorskip("yyfast._C", reason="yyfast._C is not built")
    monkeypatch.setattr(be, "_gpu_present", lambda: True)
    monkeypatch.setattr(ext, "cuda_built", lambda: True)
    report = _fresh()
    be._cached.cache_clear()
    assert report["cuda"]["devices"] == ["cpu", "cuda"] and report["cuda"]["reason"] is None
    assert be.AUTO_PREFERENCE[("cuda", True)][0] == "cuda"


def test_triton_needs_gpu_or_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(be, "_gpu_present", lambda: False)
    report = _fresh()["triton"]
    be._cached.cache_clear()
    if report["built"]:
        assert not report["available"] and "no GPU" in report["reason"]
    else:
        assert "Triton" in report["reason"] or "triton" in report["reason"]


def test_auto_falls_back_to_reference_on_cpu():
    model = yyfast.create_model("yynet_small_16")
    assert model.backend == "auto"
    assert be.auto_backend(torch.device("cpu"), training=True) in ("reference", "cuda", "triton")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_info_command():
    run = subprocess.run([sys.executable, "-m", "yyfast.info"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for word in ("torch", "triton", "reference", "cuda"):
        assert word in run.stdout


def test_package_imports_without_extension():
    code = "import sys; sys.modules['yyfast._C'] = None; import yyfast; print(yyfast.backends()['cuda']['built'])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


def test_the_compile_constant_marker_is_the_one_dynamo_sets():
    """yyfast.ops marks its backend probes constant for torch.compile without importing torch._dynamo
    (``_constant_for_compile``); the mark must stay exactly what Dynamo's own decorator sets, or
    ``torch.compile(fullgraph=True)`` would trace the probes (the fullgraph tests show that too)."""
    import torch._dynamo

    from yyfast import ops

    def plain():
        return 0

    def ours():
        return 0

    marked = torch._dynamo.assume_constant_result(plain)
    ops._constant_for_compile(ours)
    assert marked is plain and vars(plain) == vars(ours) == {"_dynamo_marked_constant": True}
    assert ops._resolve_backend._dynamo_marked_constant and ops._self_checked_const._dynamo_marked_constant


def test_import_yyfast_does_not_import_dynamo():
    """~1 s of every CLI start (2-core EPYC): nothing at import needs torch._dynamo."""
    import subprocess
    import sys

    code = "import sys, yyfast, yyfast.model, yyfast.inference; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
