"""The yyfast presets as timm models: imported by ``yyfast.timm_registry`` once timm is imported.

``timm.create_model("yynet_small_64", pretrained=False, num_classes=100)`` returns a
``yyfast.YYNet`` built by timm's ``build_model_with_cfg`` (so ``pretrained_cfg``,
``pretrained_cfg_overlay=dict(file=...)``, ``features_only`` and ``"local-dir:"``/``"hf-hub:"``
names work as for timm's own models). ``yynet`` is the generic architecture: ``YYNetConfig()``
with any options, the one ``save_pretrained`` names for a configuration that is not a preset.
"""
from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .config import YYNetConfig, get_config, list_models
from .hub import GENERIC_ARCH
from .model import YYNet
from .timm_interface import YYNetFeatures, default_cfg

ARCHITECTURES = list_models() + [GENERIC_ARCH]

default_cfgs = generate_default_cfgs({
    name: default_cfg(YYNetConfig() if name == GENERIC_ARCH else get_config(name)) for name in ARCHITECTURES})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> YYNet:
    config = YYNetConfig() if variant == GENERIC_ARCH else variant
    return build_model_with_cfg(YYNet, variant, pretrained, config=config,
                                feature_cfg=dict(feature_cls=YYNetFeatures, out_indices=None), **kwargs)


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs: Any) -> YYNet:
        return _create(name, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"yyfast's {name} (see yyfast.config.PRESETS)."
    globals()[name] = create
    return register_model(create)


for _name in ARCHITECTURES:
    _entrypoint(_name)
