"""ONNX export of the folded model (checked with onnxruntime) and torch.export of YYNet."""
import pytest
import torch

import yyfast
from helpers import rel_err
from inference_helpers import float64_reference, one_thread, trained_like_
from yyfast.export import check_onnx, export_onnx, plain_inference_model

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _model(**options):
    return trained_like_(yyfast.create_model("yynet_small_16", backend="reference", **options)).eval()


def test_onnx_dynamic_batch_two_sizes_plain_operators(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    import onnxruntime as ort

    model = _model(se_gate="hardsigmoid", fusion="gate_sub")
    path = str(tmp_path / "yynet.onnx")
    report = export_onnx(model, path, exporter="torchscript")
    assert report["dynamic_batch"] and [c["batch"] for c in report["checks"]] == [1, 3]
    assert report["max_rel_err"] < 1e-4
    assert report["custom_domains"] == [] and "BatchNormalization" not in report["ops"] and "Conv" in report["ops"]
    # An independent check against the float64 eval reference, at a third batch size.
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    (out,) = session.run(["logits"], {"images": x.numpy()})
    assert rel_err(torch.from_numpy(out), float64_reference(model, x)) < 1e-4


def test_onnx_check_catches_a_wrong_file(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    model = _model(act="silu")
    path = str(tmp_path / "fixed.onnx")
    report = export_onnx(model, path, batch=2, exporter="torchscript")
    assert not report["dynamic_batch"] and report["input_shape"] == [2, 3, 32, 32]
    other = plain_inference_model(trained_like_(yyfast.create_model("yynet_small_16", backend="reference",
                                                                    act="silu"), seed=5).eval())
    with pytest.raises(RuntimeError, match="relative error"):
        check_onnx(path, other, (2, 3, 32, 32), [2])


def test_export_onnx_bad_arguments(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="batch"):
        export_onnx(model, str(tmp_path / "a.onnx"), batch=0)
    with pytest.raises(ValueError, match="model"):
        export_onnx(torch.nn.Linear(2, 2), str(tmp_path / "a.onnx"))
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(model, str(tmp_path / "a.onnx"), exporter="tflite")


def _custom_op_backend_params():
    report = yyfast.backends()
    params = [pytest.param("reference")]
    ok = "cpu" in report["cuda"]["devices"]
    params.append(pytest.param("cuda", marks=pytest.mark.skipif(
        not ok, reason=f"backend 'cuda' (yyfast._C C++ CPU kernels) does not run here: {report['cuda']['reason']}")))
    return params


@pytest.mark.parametrize("backend", _custom_op_backend_params())
def test_torch_export_of_yynet_matches_eager(backend):
    # A small config keeps the trace short; it has stride-1 and stride-2 spans and the fusion.
    cfg = yyfast.YYNetConfig(name="tiny", yy_width=8, yy_mbconvs=2, sp_mbconvs=1, head_width=8,
                             se_gate="hardsigmoid", fusion="mul")
    model = trained_like_(yyfast.YYNet(cfg, backend=backend)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        try:
            eager = model(x)
        except NotImplementedError as exc:
            pytest.skip(f"the {backend} dw_bn_act_se kernels are not written yet ({exc})")
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    if backend == "cuda":
        assert any("yyfast" in t for t in targets), f"the custom ops are not in the graph: {sorted(targets)}"
    with torch.no_grad():
        assert rel_err(program.module()(x), eager) < 1e-6
        x3 = torch.randn(3, 3, 16, 16)
        assert rel_err(program.module()(x3), model(x3)) < 1e-6
