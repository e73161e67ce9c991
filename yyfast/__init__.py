"""yyfast: fast Yin Yang Convolutional Nets (YYNet) for PyTorch.

Public API: ``YYNet``, ``create_model``, ``list_models``, ``YYNetConfig``, ``backends``,
``ops`` (the fused ops), ``convert_original_checkpoint``, ``optimize_for_inference``,
``InferenceYYNet``, ``export_onnx``. With timm installed, the presets are also timm models
(``yyfast.timm_registry``); ``save_pretrained``/``from_pretrained`` are in ``yyfast.hub``.
"""
__version__ = "0.1.0"

from . import ops
from .availability import backends
from .config import PARAMETER_COUNTS, YYNetConfig, get_config, list_models
from .convert import convert_original_checkpoint
from .export import export_onnx
from .inference import InferenceYYNet, optimize_for_inference
from .model import YYNet, create_model
from .timm_registry import install as _install_timm_registration

_install_timm_registration()

__all__ = ["YYNet", "YYNetConfig", "create_model", "list_models", "get_config", "backends", "ops",
           "convert_original_checkpoint", "optimize_for_inference", "InferenceYYNet", "export_onnx",
           "PARAMETER_COUNTS", "__version__"]
