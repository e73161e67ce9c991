// The yyfast operator schemas, declared once. CPU and CUDA implementations register in
// cpu/*.cpp and cuda/*.cpp; fakes and autograd are registered from Python (yyfast/ops/cuda_ops.py).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(yyfast, m) {
  m.def("yinyang_fuse(Tensor a, Tensor i, float c1, float c2, float c3) -> Tensor");
  m.def("yinyang_fuse_backward(Tensor grad, Tensor a, Tensor i, float c1, float c2, float c3) -> (Tensor, Tensor)");
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
static PyMethodDef methods[] = {
    {"cuda_built", py_cuda_built, METH_NOARGS, "True when the CUDA kernels were compiled in."},
    {nullptr, nullptr, 0, nullptr}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "yyfast C++/CUDA ops", -1, methods};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
