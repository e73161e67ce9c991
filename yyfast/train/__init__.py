"""``yyfast.train``: the paper's training recipe as a command (``python -m yyfast.train``).

Files, one job each: ``cli`` (options, resume), ``loop`` (the run), ``engine`` (one epoch, one
evaluation), ``recipe`` (optimizer, schedule, weight-decay rule, precision), ``ema``,
``augment`` (batched on-device augmentation), ``data`` (the dataset layouts), ``cache``
(decoded uint8 cache), ``checkpoint`` (atomic files, RNG state), ``distributed`` (torchrun),
``plot`` (curves.png).
"""
from .cli import build_parser, main, parse
from .loop import train

__all__ = ["main", "train", "build_parser", "parse"]
