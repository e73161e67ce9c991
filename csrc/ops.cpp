// The yyfast._C operator schemas: the text of yyfast/ops/schemas.py (the one contract of every backend;
// tests/test_op_schemas.py compares them). CPU and CUDA implementations register in cpu/*.cpp and
// cuda/*.cu; fakes and autograd are registered from Python (yyfast/ops/registration.py).
#include <Python.h>
#include <torch/library.h>

#include "cpu/span_kernels.h"

TORCH_LIBRARY(yyfast, m) {
  m.def("yinyang_fuse_cuda(Tensor a, Tensor i, float c1, float c2, float c3) -> Tensor");
  m.def(
      "yinyang_fuse_cuda_backward(Tensor grad, Tensor a, Tensor i, float c1, float c2, float c3) -> (Tensor, "
      "Tensor)");
  // The MBConv span DWConv3x3 -> BN -> act -> SE. Outputs: y (x's dtype and memory format); mean and var,
  // the per-channel batch mean and biased variance in training (copies of the running statistics in
  // eval), float32 (float64 for float64 x); pooled, the (N, C) SE input mean_hw(act(BN(z))), saved so the
  // backward recomputes the tiny SE MLP instead of storing its activations.
  m.def(
      "dw_bn_act_se_cuda(Tensor x, Tensor dw_weight, Tensor bn_weight, Tensor bn_bias, Tensor running_mean, "
      "Tensor running_var, Tensor se_w1, Tensor se_b1, Tensor se_w2, Tensor se_b2, int stride, float eps, "
      "bool training, str act, str gate) -> (Tensor y, Tensor mean, Tensor var, Tensor pooled)");
  // Gradients of dw_bn_act_se_cuda's y for x and every parameter, from the saved x, mean, var, pooled.
  m.def(
      "dw_bn_act_se_cuda_backward(Tensor grad_y, Tensor x, Tensor dw_weight, Tensor bn_weight, Tensor bn_bias, "
      "Tensor mean, Tensor var, Tensor pooled, Tensor se_w1, Tensor se_b1, Tensor se_w2, Tensor se_b2, "
      "int stride, float eps, bool training, str act, str gate) -> (Tensor grad_x, Tensor grad_dw_weight, "
      "Tensor grad_bn_weight, Tensor grad_bn_bias, Tensor grad_se_w1, Tensor grad_se_b1, Tensor grad_se_w2, "
      "Tensor grad_se_b2)");
}

namespace yyfast {
bool cuda_built() {
#ifdef YYFAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace yyfast

// A plain CPython module (no pybind11): importing yyfast._C registers the ops above.
static PyObject* py_cuda_built(PyObject*, PyObject*) {
  if (yyfast::cuda_built()) Py_RETURN_TRUE;
  Py_RETURN_FALSE;
}
// The C++ CPU span kernels' instruction set (see cpu/span_kernels.h): which one runs, which this CPU
// offers, and a switch for tests and benchmarks.
static PyObject* py_cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(yyfast::span_cpu_kernels().isa); }
static PyObject* py_cpu_isas(PyObject*, PyObject*) {
  PyObject* out = PyList_New(0);
  for (const char* name : {"avx512", "avx2+fma", "baseline"}) {
    if (yyfast::span_cpu_kernels_named(name) == nullptr) continue;
    PyObject* s = PyUnicode_FromString(name);
    PyList_Append(out, s);
    Py_DECREF(s);
  }
  return out;
}
static PyObject* py_set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : nullptr;
  if (name == nullptr || !yyfast::set_span_cpu_isa(name)) {
    PyErr_Format(PyExc_ValueError, "isa=%R is not available on this CPU; see yyfast._C.cpu_isas()", arg);
    return nullptr;
  }
  Py_RETURN_NONE;
}
// fast_forward.cpp: InferenceYYNet's one-call forward with its checks in C.
PyObject* yyfast_fast_record(PyObject*, PyObject* args);
PyObject* yyfast_fast_forward(PyObject*, PyObject* args);
static PyMethodDef methods[] = {
    {"cuda_built", py_cuda_built, METH_NOARGS, "True when the CUDA kernels were compiled in."},
    {"cpu_isa", py_cpu_isa, METH_NOARGS, "The instruction set the C++ CPU span kernels run with."},
    {"cpu_isas", py_cpu_isas, METH_NOARGS, "The instruction sets of the C++ CPU span kernels this CPU can run."},
    {"set_cpu_isa", py_set_cpu_isa, METH_O, "Select the C++ CPU span kernels' instruction set (for tests)."},
    {"fast_record", yyfast_fast_record, METH_VARARGS,
     "The arguments of InferenceYYNet's one-call forward (a capsule)."},
    {"fast_forward", yyfast_fast_forward, METH_VARARGS,
     "InferenceYYNet's logits in one call, or None where its record no longer holds."},
    {nullptr, nullptr, 0, nullptr}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "yyfast C++/CUDA ops", -1, methods};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
