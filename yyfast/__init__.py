"""yyfast: fast Yin Yang Convolutional Nets (YYNet) for PyTorch.

Public API: ``YYNet``, ``create_model``, ``list_models``, ``YYNetConfig``, ``backends``,
``ops`` (the fused ops), ``convert_original_checkpoint``, ``optimize_for_inference``,
``InferenceYYNet``, ``export_onnx``. With timm installed, the presets are also timm models
(``yyfast.timm_registry``); ``save_pretrained``/``from_pretrained`` are in ``yyfast.hub``.
"""
from . import ops
from ._version import __version__
from .availability import backends
from .config import PARAMETER_COUNTS, YYNetConfig, get_config, list_models
from .inference import InferenceYYNet, optimize_for_inference
from .model import YYNet, create_model
from .timm_registry import install as _install_timm_registration

_install_timm_registration()



def __getattr__(name):
    # Imported on first use (PEP 562), not here: `python -m yyfast.convert` (and `yyfast.export`) would
    # otherwise run a module that `import yyfast` already imported, and runpy warns about that.
    if name == "convert_original_checkpoint":
        from .convert import convert_original_checkpoint

        return convert_original_checkpoint
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'yyfast' has no attribute {name!r}")


__all__ = ["YYNet", "YYNetConfig", "create_model", "list_models", "get_config", "backends", "ops",
           "convert_original_checkpoint", "optimize_for_inference", "InferenceYYNet", "export_onnx",
           "PARAMETER_COUNTS", "__version__"]
