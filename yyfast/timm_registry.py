"""Register the yyfast presets with timm when timm is there, without importing it.

``import yyfast`` must stay fast and must work without timm (importing timm costs about 1.5 s on
the 2-core VM: it imports torchvision and huggingface_hub). So: if timm is already imported, the
presets are registered now; otherwise a one-shot import hook registers them right after the first
``import timm`` finishes, in whatever order the user imports the two packages.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings


def register() -> None:
    """Register every preset in timm's model registry (idempotent: importing a module twice does nothing)."""
    try:
        from . import timm_models  # noqa: F401  (registers on import)
    except Exception as exc:  # a timm too old or too new must not break `import timm` or `import yyfast`
        warnings.warn(f"yyfast: could not register its models with timm ({type(exc).__name__}: {exc})",
                      stacklevel=2)


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first import of ``timm`` it lets the other finders find it, then
    wraps that spec's ``exec_module`` so ``register()`` runs once timm is fully imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        if self in sys.meta_path:  # one shot; also keeps find_spec below from finding this finder
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        # A file loader serves this one module, so wrapping its exec_module touches nothing else. (Other
        # loaders, e.g. zipimport's, are shared: there, call yyfast.timm_registry.register() by hand.)
        if spec is None or not isinstance(spec.loader, (importlib.machinery.SourceFileLoader,
                                                        importlib.machinery.SourcelessFileLoader)):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    """Called by ``import yyfast``."""
    if "timm" in sys.modules:
        register()
    elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimmImport())
