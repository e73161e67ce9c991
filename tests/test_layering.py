"""The package's imports flow one way: each module imports only from its own layer or the layers below.

``LAYERS`` is the declared order, bottom first, as data; a module belongs to the layer of the
longest dotted prefix of its name listed there, and every module must have one. Every ``import``
and ``from ... import`` statement in ``yyfast/`` and ``kernels/`` (installed as ``yyfast.kernels``)
is read with ``ast``, including those inside functions: an import deferred to call time is still a
dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Bottom first. A layer may import from itself and from the layers before it. An entry places
#: that module and, if it is a package, its submodules; ``yyfast`` places only the package's
#: ``__init__`` (its submodules each have their own entry).
LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    # names and tables that depend on nothing of yyfast. The version string is set first in
    # yyfast/__init__.py, before that file imports anything, so reading it depends on nothing.
    ("config", ("yyfast.config", "yyfast._version", "yyfast.activations", "yyfast.cli_help", "yyfast.__version__")),
    # the pure-PyTorch network and the interface mixins it inherits (see yyfast/reference_model.py)
    ("reference", ("yyfast.reference_model", "yyfast.timm_interface", "yyfast.hub")),
    ("kernels", ("yyfast.kernels",)),
    ("ops", ("yyfast.ops", "yyfast._C", "yyfast.availability", "yyfast.self_check")),
    ("model", ("yyfast.model", "yyfast.eval_fold", "yyfast.bn_fold", "yyfast.cpu_fusion", "yyfast.sync_bn",
               "yyfast.cpu_eval")),
    ("inference", ("yyfast.inference",)),
    # the package's front door and the tools built on everything
    ("apps", ("yyfast", "yyfast.train", "yyfast.convert", "yyfast.export", "yyfast.predict", "yyfast.evaluate",
              "yyfast.info", "yyfast.preprocess", "yyfast.timm_models", "yyfast.timm_registry")),
)
ROOT_PACKAGE = "yyfast"
LAYER_NAMES = [name for name, _ in LAYERS]
PACKAGES = ((ROOT_PACKAGE, ROOT / "yyfast"), ("yyfast.kernels", ROOT / "kernels"))


def _declared_layer(module: str) -> Optional[str]:
    best, best_len = None, -1
    for layer, entries in LAYERS:
        for entry in entries:
            covers = module == entry or (entry != ROOT_PACKAGE and module.startswith(entry + "."))
            if covers and len(entry) > best_len:
                best, best_len = layer, len(entry)
    return best


def layer_of(name: str, known_modules) -> Optional[str]:
    """The layer of a module, or of an imported name: a name declared itself (``yyfast.__version__``),
    else the longest prefix of it that is a module (``yyfast.ops.composed.dw_bn_act_se_reference``
    -> ``yyfast.ops.composed``). None: in no layer."""
    if any(name in entries for _, entries in LAYERS):
        return _declared_layer(name)
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in known_modules:
        parts.pop()
    return _declared_layer(".".join(parts))


def modules() -> Iterator[Tuple[str, Path, bool]]:
    """(dotted name, file, whether it is a package's __init__) of every module in the two trees."""
    for package, folder in PACKAGES:
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_init = parts[-1] == "__init__"
            if is_init:
                parts = parts[:-1]
            yield ".".join([package, *parts]), path, is_init


def imports_of(module: str, path: Path, is_init: bool) -> Iterator[Tuple[int, str]]:
    """(line, imported name) for each import of a yyfast name; ``from X import n`` gives ``X.n``
    (a submodule or an attribute: the longest-prefix lookup places both)."""
    package = module if is_init else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "kernels" or target.startswith("kernels."):
                target = "yyfast." + target  # kernels/ is installed as yyfast.kernels
            if target == "yyfast" or target.startswith("yyfast."):
                yield node.lineno, target


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _known_modules() -> Set[str]:
    return {module for module, _, _ in modules()} | {"yyfast._C"}  # _C: the compiled extension


def upward_imports(mods) -> List[str]:
    """'file:line: module (layer) imports name (layer)' for each import of a higher layer in ``mods``."""
    known = _known_modules()
    found = []
    for module, path, is_init in mods:
        own = layer_of(module, known)
        if own is None:
            continue  # reported by test_every_module_has_a_layer
        for line, target in imports_of(module, path, is_init):
            layer = layer_of(target, known)
            if layer is not None and LAYER_NAMES.index(layer) > LAYER_NAMES.index(own):
                found.append(f"{_shown(path)}:{line}: {module} ({own}) imports {target} ({layer})")
    return found


def test_every_module_has_a_layer():
    known = _known_modules()
    missing = [f"{_shown(path)} ({module})" for module, path, _ in modules() if layer_of(module, known) is None]
    assert not missing, f"modules in no layer; add them to LAYERS in {Path(__file__).name}: {missing}"


def test_imports_flow_down_the_layers():
    found = upward_imports(list(modules()))
    assert not found, "imports that go up the layer order " + " -> ".join(LAYER_NAMES) + ":\n" + "\n".join(found)


@pytest.mark.parametrize("module, is_init, source, expected", [
    ("yyfast.model", False, "from .inference import cpu_fusion", ["yyfast.inference.cpu_fusion"]),
    ("yyfast.inference.modules", False, "from .. import ops, __version__", ["yyfast.ops", "yyfast.__version__"]),
    ("yyfast.inference", True, "from .modules import InferenceYYNet", ["yyfast.inference.modules.InferenceYYNet"]),
    ("yyfast.ops.cuda_ops", False, "from ..config import FUSIONS", ["yyfast.config.FUSIONS"]),
    ("yyfast.ops.triton_ops", False, "import yyfast.kernels.dw_bn_act_se as k", ["yyfast.kernels.dw_bn_act_se"]),
    ("yyfast.model", False, "from kernels import yinyang_fuse", ["yyfast.kernels.yinyang_fuse"]),
    ("yyfast.model", False, "def f():\n    from .inference import fold", ["yyfast.inference.fold"]),
    ("yyfast.model", False, "import torch\nfrom typing import Any", []),
])
def test_imports_are_resolved(tmp_path, module, is_init, source, expected):
    """The resolver the layering test relies on: relative imports from modules and packages, deferred
    imports, the kernels' installed name, other packages left out."""
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [target for _, target in imports_of(module, path, is_init)] == expected


def test_an_upward_import_is_found(tmp_path):
    """A model-layer module importing the inference layer is reported with its line; a downward one is not."""
    path = tmp_path / "model.py"
    path.write_text("from .config import YYNetConfig\nfrom .inference.modules import FoldedSpan\n")
    found = upward_imports([("yyfast.model", path, False)])
    assert found == [f"{path}:2: yyfast.model (model) imports yyfast.inference.modules.FoldedSpan (inference)"]
