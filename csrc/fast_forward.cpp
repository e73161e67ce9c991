// yyfast._C.fast_record / yyfast._C.fast_forward: InferenceYYNet's forward as one call from Python to
// yyfast::yynet_eval, with every check the Python route makes before it done here in C (issue 17).
//
// Why: at batch 1 the Python around the one-call forward cost ~0.65 ms of a ~4.1 ms forward
// (yynet_small_64, 2 threads, 2-core EPYC, 2026-11-28): the module walk behind the weight check 0.14 ms,
// same_values with its two 105-tensor list conversions 0.27, the memory scope, input preparation and
// hook checks 0.2 (each 3-8x its warm time: the op before it leaves the caches cold). Here the walk is
// C over the modules' dicts, the tensors are held in C++ (no conversion), and the arena is entered in C++.
//
// fast_record(weights, plan, fusion, act, gate, fc_weight, fc_bias, cls_weight, cls_bias, params,
//             snapshot, in_chans) -> capsule: the op's arguments and the parameters with their snapshots
//             (None for a parameter the op's weights are views of).
// fast_forward(root, record, x) -> logits, or None where anything differs from when the record was made
// (the caller then takes the Python route, which binds again or raises its own error):
//   record = (modules, params, capsule, state, global_hook_dicts), built by InferenceYYNet._fast_record:
//   * the module tree walked as yyfast.inference.modules._module_tree walks it (depth first, children in
//     `_modules` order, last pushed first) must be `modules`, object for object, and the parameters met
//     on the way (`_parameters` values that are not None) must be `params`, object for object;
//   * no module in it may have a forward hook or pre-hook, nor any dict of `global_hook_dicts` an entry
//     (hooks run only on the per-block route);
//   * every (name, value) of `state` must equal root.__dict__[name] (graph, backend);
//   * a parameter the op reads through a copy (a Winograd transform, a packed layout) must hold its
//     snapshot's bytes (same_values: `.data` writes miss the version counters); one the op reads itself
//     (its weight argument is a view of the parameter, snapshot None) must still be at the same memory
//     with the same sizes and strides (`p.data = t` moves it; writes in place are what the op reads);
//   * x must be a 4-d float32 CPU strided tensor with in_chans channels.
// The op is called through the dispatcher (profilers and dispatch modes see yyfast::yynet_eval), without
// autograd, inside the CPU arena, with the GIL released.
#include <Python.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/python_variable.h>

#include <string>
#include <vector>

#include "cpu/eval_ops.h"

namespace {

constexpr const char* kCapsule = "yyfast.fast_record";

struct Record {
  c10::List<c10::optional<at::Tensor>> weights;
  std::vector<int64_t> plan;
  std::vector<double> fusion;
  std::string act, gate;
  at::Tensor fc_weight, fc_bias, cls_weight, cls_bias;
  // The parameters the op reads through a copy (a Winograd transform, a packing) with their snapshots;
  // the others (the op's weights are views of them) with where their data was at binding.
  std::vector<at::Tensor> copied, snapshot;
  struct Aliased {
    at::Tensor param;
    const void* data;
    std::vector<int64_t> sizes, strides;
  };
  std::vector<Aliased> aliased;
  int64_t in_chans = 0;

  // Whether every parameter is as at binding: an aliased one still at the same memory with the same
  // layout (an in-place write is what the op reads; `p.data = t` moves it), a copied one the same bytes.
  bool unchanged() const {
    for (const Aliased& a : aliased)
      if (a.param.const_data_ptr() != a.data || a.param.sizes() != at::IntArrayRef(a.sizes) ||
          a.param.strides() != at::IntArrayRef(a.strides) || a.param.scalar_type() != at::kFloat)
        return false;
    return yyfast::same_values(copied, snapshot);
  }
};

bool tensor_arg(PyObject* o, const char* name, at::Tensor& out) {
  if (!THPVariable_Check(o)) {
    PyErr_Format(PyExc_TypeError, "fast_record: %s must be a tensor", name);
    return false;
  }
  out = THPVariable_Unpack(o);
  return true;
}

bool tensor_list(PyObject* seq, const char* name, bool none_ok, std::vector<c10::optional<at::Tensor>>& out) {
  PyObject* fast = PySequence_Fast(seq, name);
  if (fast == nullptr) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* o = PySequence_Fast_GET_ITEM(fast, i);
    if (o == Py_None && none_ok) {
      out.emplace_back(c10::nullopt);
    } else if (THPVariable_Check(o)) {
      out.emplace_back(THPVariable_Unpack(o));
    } else {
      Py_DECREF(fast);
      PyErr_Format(PyExc_TypeError, "fast_record: %s[%zd] must be a tensor%s", name, i, none_ok ? " or None" : "");
      return false;
    }
  }
  Py_DECREF(fast);
  return true;
}

template <typename T, typename F>
bool number_list(PyObject* seq, const char* name, F convert, std::vector<T>& out) {
  PyObject* fast = PySequence_Fast(seq, name);
  if (fast == nullptr) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  for (Py_ssize_t i = 0; i < n; ++i) {
    out.push_back(static_cast<T>(convert(PySequence_Fast_GET_ITEM(fast, i))));
    if (PyErr_Occurred()) {
      Py_DECREF(fast);
      return false;
    }
  }
  Py_DECREF(fast);
  return true;
}

void free_record(PyObject* capsule) { delete static_cast<Record*>(PyCapsule_GetPointer(capsule, kCapsule)); }

// Every module of the tree is `modules` in walk order, without hooks, with exactly `params`.
bool same_tree(PyObject* root, PyObject* modules, PyObject* params) {
  const Py_ssize_t n_modules = PyTuple_GET_SIZE(modules), n_params = PyTuple_GET_SIZE(params);
  std::vector<PyObject*> stack{root};
  Py_ssize_t mi = 0, pi = 0;
  while (!stack.empty()) {
    PyObject* m = stack.back();
    stack.pop_back();
    if (mi >= n_modules || PyTuple_GET_ITEM(modules, mi) != m) return false;
    ++mi;  // a recorded module: `modules` holds a reference, so every pointer below stays valid
    // A new reference, dropped at once: the module (held by `modules`) keeps its __dict__ alive.
    PyObject* d = PyObject_GenericGetDict(m, nullptr);
    if (d == nullptr) {
      PyErr_Clear();
      return false;
    }
    Py_DECREF(d);
    if (!PyDict_Check(d)) return false;
    for (const char* hooks : {"_forward_hooks", "_forward_pre_hooks"}) {
      PyObject* h = PyDict_GetItemString(d, hooks);
      if (h == nullptr || !PyDict_Check(h) || PyDict_Size(h) != 0) return false;
    }
    PyObject* ps = PyDict_GetItemString(d, "_parameters");
    PyObject* ms = PyDict_GetItemString(d, "_modules");
    if (ps == nullptr || ms == nullptr || !PyDict_Check(ps) || !PyDict_Check(ms)) return false;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(ps, &pos, &key, &value)) {
      if (value == Py_None) continue;
      if (pi >= n_params || PyTuple_GET_ITEM(params, pi) != value) return false;
      ++pi;
    }
    pos = 0;
    while (PyDict_Next(ms, &pos, &key, &value))
      if (value != Py_None) stack.push_back(value);
  }
  return mi == n_modules && pi == n_params;
}

bool same_state(PyObject* root, PyObject* state, PyObject* global_hooks) {
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(global_hooks); ++i) {
    PyObject* h = PyTuple_GET_ITEM(global_hooks, i);
    if (!PyDict_Check(h) || PyDict_Size(h) != 0) return false;
  }
  PyObject* d = PyObject_GenericGetDict(root, nullptr);  // kept alive by root, as above
  if (d == nullptr) {
    PyErr_Clear();
    return false;
  }
  Py_DECREF(d);
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(state); ++i) {
    PyObject* pair = PyTuple_GET_ITEM(state, i);
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) return false;
    PyObject* now = PyDict_GetItemWithError(d, PyTuple_GET_ITEM(pair, 0));
    if (now == nullptr) {
      PyErr_Clear();
      return false;
    }
    const int eq = PyObject_RichCompareBool(now, PyTuple_GET_ITEM(pair, 1), Py_EQ);
    if (eq != 1) {
      PyErr_Clear();
      return false;
    }
  }
  return true;
}

}  // namespace

PyObject* yyfast_fast_record(PyObject*, PyObject* args) {
  PyObject *weights, *plan, *fusion, *fc_w, *fc_b, *cls_w, *cls_b, *params, *snapshot;
  const char *act, *gate;
  long long in_chans;
  if (!PyArg_ParseTuple(args, "OOOssOOOOOOL", &weights, &plan, &fusion, &act, &gate, &fc_w, &fc_b, &cls_w, &cls_b,
                        &params, &snapshot, &in_chans))
    return nullptr;
  auto* r = new Record();
  std::vector<c10::optional<at::Tensor>> w, p, s;
  bool ok = tensor_list(weights, "weights", true, w) && tensor_list(params, "params", false, p) &&
            tensor_list(snapshot, "snapshot", true, s) &&
            number_list<int64_t>(plan, "plan", PyLong_AsLongLong, r->plan) &&
            number_list<double>(fusion, "fusion", PyFloat_AsDouble, r->fusion) &&
            tensor_arg(fc_w, "fc_weight", r->fc_weight) && tensor_arg(fc_b, "fc_bias", r->fc_bias) &&
            tensor_arg(cls_w, "cls_weight", r->cls_weight) && tensor_arg(cls_b, "cls_bias", r->cls_bias);
  if (ok && p.size() != s.size()) {
    PyErr_SetString(PyExc_ValueError, "fast_record: params and snapshot must have the same length");
    ok = false;
  }
  if (!ok) {
    delete r;
    return nullptr;
  }
  for (auto& t : w) r->weights.push_back(t);
  for (size_t i = 0; i < p.size(); ++i) {
    if (s[i].has_value()) {
      r->copied.push_back(*p[i]);
      r->snapshot.push_back(*s[i]);
    } else {
      const at::Tensor& t = *p[i];
      r->aliased.push_back({t, t.const_data_ptr(), t.sizes().vec(), t.strides().vec()});
    }
  }
  r->act = act;
  r->gate = gate;
  r->in_chans = in_chans;
  PyObject* capsule = PyCapsule_New(r, kCapsule, free_record);
  if (capsule == nullptr) delete r;
  return capsule;
}

PyObject* yyfast_fast_forward(PyObject*, PyObject* args) {
  PyObject *root, *rec, *x;
  if (!PyArg_UnpackTuple(args, "fast_forward", 3, 3, &root, &rec, &x)) return nullptr;
  if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 5) {
    PyErr_SetString(PyExc_TypeError, "fast_forward: record must be (modules, params, capsule, state, hook dicts)");
    return nullptr;
  }
  PyObject *modules = PyTuple_GET_ITEM(rec, 0), *params = PyTuple_GET_ITEM(rec, 1);
  PyObject *capsule = PyTuple_GET_ITEM(rec, 2), *state = PyTuple_GET_ITEM(rec, 3);
  PyObject* global_hooks = PyTuple_GET_ITEM(rec, 4);
  auto* r = static_cast<Record*>(PyCapsule_GetPointer(capsule, kCapsule));
  if (r == nullptr) return nullptr;
  if (!PyTuple_Check(modules) || !PyTuple_Check(params) || !PyTuple_Check(state) || !PyTuple_Check(global_hooks)) {
    PyErr_SetString(PyExc_TypeError, "fast_forward: record's modules, params, state and hook dicts must be tuples");
    return nullptr;
  }
  if (!THPVariable_Check(x) || !same_state(root, state, global_hooks) || !same_tree(root, modules, params))
    Py_RETURN_NONE;
  const at::Tensor& t = THPVariable_Unpack(x);
  if (t.dim() != 4 || t.size(1) != r->in_chans || t.scalar_type() != at::kFloat || !t.device().is_cpu() ||
      t.layout() != at::kStrided)
    Py_RETURN_NONE;
  at::Tensor out;
  bool ran = false;
  PyThreadState* ts = PyEval_SaveThread();
  try {
    if (r->unchanged()) {
      static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("yyfast::yynet_eval", "");
      at::NoGradGuard no_grad;
      const bool arena = yyfast::arena_enter();
      struct Exit {
        bool on;
        ~Exit() {
          if (on) yyfast::arena_exit();
        }
      } exit_arena{arena};
      torch::jit::Stack stack{t,       r->weights,   r->plan,    r->fusion,     r->act,
                              r->gate, r->fc_weight, r->fc_bias, r->cls_weight, r->cls_bias};
      op.callBoxed(&stack);
      out = stack.back().toTensor();
      ran = true;
    }
  } catch (...) {
    ran = false;  // the Python route runs it again and raises its own error
  }
  PyEval_RestoreThread(ts);
  if (!ran) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(out));
}
