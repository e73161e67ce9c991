"""timm's model interface for the YYNet classes, without needing timm.

``TimmInfo`` gives the attributes timm reads off a model, all derived from ``model.config``:
``num_classes``, ``num_features`` (channels of ``forward_features``), ``head_hidden_size`` (width
of the pre-logits), ``pretrained_cfg``/``default_cfg`` (the preset's real preprocessing) and
``feature_info``. ``TimmInterface`` adds the methods: ``forward_head(x, pre_logits)``,
``get_classifier``, ``reset_classifier``, ``forward_intermediates`` and
``prune_intermediate_layers``. ``YYNetFeatures`` is the ``features_only=True`` model.

Feature points (``feature_info``): the Yin/Yang fusion (stride 2; the two branches are never at
one resolution before it) and, in the single path, the last block at each stride.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .config import INPUT_SIZES, NORMALIZE_MEAN, NORMALIZE_STD, YYNetConfig

#: The convolutions that read the input image (timm adapts them for another ``in_chans``); the
#: Yin branch reads one derived channel whatever ``in_chans`` is.
FIRST_CONV = ("yang.0.conv1", "yang.0.shortcut")
CLASSIFIER = "head.classifier"
#: timm's name for the head dropout, accepted as a model option.
TIMM_ALIASES = {"drop_rate": "head_dropout"}

Indices = Union[None, int, Sequence[int]]


def translate_timm_kwargs(overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Model keyword arguments with timm's spellings (``drop_rate``) mapped onto ``YYNetConfig`` fields."""
    out = dict(overrides)
    for timm_name, field in TIMM_ALIASES.items():
        if timm_name in out:
            if field in out and out[field] != out[timm_name]:
                raise ValueError(f"{timm_name}={out[timm_name]!r} and {field}={out[field]!r} are the same option; "
                                 "give one")
            out[field] = out.pop(timm_name)
    return out


def default_cfg(config: YYNetConfig) -> Dict[str, Any]:
    """timm's ``pretrained_cfg`` for ``config``: input size, normalisation, crop, classifier names."""
    _, h, w = INPUT_SIZES.get(config.name, (3, 32, 32))  # custom configs: CIFAR-sized like the default
    reduction = feature_points(config)[-1][2]
    return {
        "architecture": config.name if config.name in INPUT_SIZES else "yynet",
        "input_size": (config.in_chans, h, w),
        "pool_size": (max(1, h // reduction), max(1, w // reduction)),
        "fixed_input_size": False,  # fully convolutional, global average pool
        "mean": NORMALIZE_MEAN,
        "std": NORMALIZE_STD,
        "crop_pct": 1.0,
        "crop_mode": "squash",  # the paper recipe stretches to S x S (yyfast.preprocess), no crop
        "interpolation": "bilinear",
        "num_classes": config.num_classes,
        "first_conv": FIRST_CONV,
        "classifier": CLASSIFIER,
        "paper_ids": "https://github.com/NoSavedDATA/YinYang_CNN",
    }


def feature_points(config: YYNetConfig) -> List[Tuple[Optional[int], int, int]]:
    """``(single-path block index or None for the fusion, channels, reduction)`` of every feature point."""
    points: List[Tuple[Optional[int], int, int]] = [(None, config.branch_widths()[-1], 2)]
    blocks = config.single_path_blocks()
    reduction = 2
    for k, (_, _, c_out, stride) in enumerate(blocks):
        reduction *= stride
        if k + 1 == len(blocks) or blocks[k + 1][3] > 1:  # last block before the next stride
            points.append((k, c_out, reduction))
    return points


def feature_info_of(config: YYNetConfig) -> List[Dict[str, Any]]:
    return [{"num_chs": c, "reduction": r, "module": "fusion" if k is None else f"single_path.{k}", "index": n}
            for n, (k, c, r) in enumerate(feature_points(config))]


def take_indices(count: int, indices: Indices) -> List[int]:
    """timm's ``feature_take_indices``: None -> all, int n -> the last n, a sequence -> those (negative from
    the end)."""
    if indices is None:
        indices = count
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= count:
            raise ValueError(f"indices={indices} is not valid; this model has {count} feature points (1 to {count})")
        return list(range(count - indices, count))
    out = []
    for i in indices:
        idx = count + i if i < 0 else i
        if not 0 <= idx < count:
            raise ValueError(f"feature index {i} is out of range; this model has {count} feature points "
                             f"(0 to {count - 1}, or negative from the end)")
        out.append(idx)
    return out


class TimmInfo:
    """timm's model attributes, derived from ``self.config`` (for every YYNet class)."""

    config: YYNetConfig

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``' output (what ``forward_head`` pools)."""
        return self.config.out_width

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)`` (the head's hidden Linear)."""
        return self.config.head_width

    @property
    def feature_info(self) -> List[Dict[str, Any]]:
        return feature_info_of(self.config)

    # timm's builder assigns pretrained_cfg/default_cfg on the models it creates (and timm code may
    # edit that dict in place, so it is returned as it is); until then (or for a model made with
    # yyfast.YYNet directly) they are derived from the config.
    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        cfg = self.__dict__.get("_pretrained_cfg")
        return cfg if cfg is not None else default_cfg(self.config)

    @pretrained_cfg.setter
    def pretrained_cfg(self, value: Dict[str, Any]) -> None:
        self.__dict__["_pretrained_cfg"] = value

    default_cfg = pretrained_cfg  # timm's older name, the same object


class TimmInterface(TimmInfo):
    """timm's model methods for ``ReferenceYYNet`` and ``yyfast.YYNet``."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> Linear -> act (``pre_logits=True`` stops here) -> dropout -> classifier."""
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new, freshly initialised classifier for ``num_classes`` (0: none, the model returns pre-logits)."""
        from .reference_model import new_classifier

        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r} is not valid; YYNet's head always average-pools "
                             "(allowed values: None, 'avg')")
        self.config = self.config.replace(num_classes=num_classes)  # validates num_classes
        fc = self.head.fc.weight
        self.head.classifier = new_classifier(self.config.head_width, num_classes).to(fc.device, fc.dtype)

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's feature API: the feature maps at ``indices`` (see ``feature_info``), and unless
        ``intermediates_only`` also the final ``forward_features`` output: ``(final, [maps])``.
        ``norm`` is accepted for timm's callers; YYNet has no final norm layer."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r} is not valid; allowed values: 'NCHW'")
        points = feature_points(self.config)
        take = set(take_indices(len(points), indices))
        last = max(take)
        out = []
        x = self.forward_stem(x)
        if 0 in take:
            out.append(x)
        blocks = list(self.single_path)
        stop = len(blocks)
        if stop_early or intermediates_only:  # nothing after the last wanted point is needed
            stop = 0 if points[last][0] is None else points[last][0] + 1
        point_of = {k: n for n, (k, _, _) in enumerate(points) if k is not None}
        for k in range(stop):
            x = blocks[k](x)
            if point_of.get(k) in take:
                out.append(x)
        return out if intermediates_only else (x, out)

    def prune_intermediate_layers(self, indices: Indices = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the single-path blocks after the last feature point in ``indices`` (and the head): the
        model then only serves ``forward_intermediates``. Returns the kept indices."""
        points = feature_points(self.config)
        take = take_indices(len(points), indices)
        block = points[max(take)][0]
        self.single_path = self.single_path[:0 if block is None else block + 1]
        if prune_head:
            self.head = nn.Identity()
        return take


class FeatureInfo:
    """timm's ``FeatureInfo`` accessors (``channels()``, ``reduction()``, ``module_name()``) over the
    chosen feature points, so a features model reads the same with or without timm installed."""

    def __init__(self, info: List[Dict[str, Any]], out_indices: Sequence[int]):
        self.info, self.out_indices = info, tuple(out_indices)

    def get(self, key: str, idx: Union[None, int, Sequence[int]] = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Optional[Sequence[int]] = None):
        chosen = [self.info[i] for i in (self.out_indices if idx is None else idx)]
        return chosen if keys is None else [{k: d[k] for k in keys} for d in chosen]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


class YYNetFeatures(nn.Module):
    """``features_only=True``: a YYNet returning the list of feature maps at ``out_indices``.

    The blocks after the last chosen point and the head are dropped (timm's features models carry
    no classifier either). Used by ``yyfast.create_model`` and, as the ``feature_cls``, by timm.
    """

    def __init__(self, model: nn.Module, out_indices: Indices = None, **timm_options: Any):
        super().__init__()
        for key, value in timm_options.items():
            if key == "output_fmt" and value == "NCHW":
                continue
            raise ValueError(f"{key}={value!r} is not supported by YYNet's features model "
                             "(allowed options: out_indices)")
        info = feature_info_of(model.config)
        taken = model.prune_intermediate_layers(out_indices)
        self.model = model
        self.out_indices = tuple(taken)
        self.feature_info = FeatureInfo(info, self.out_indices)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)
