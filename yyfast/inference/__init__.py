"""Inference: BatchNorm folding, the eval-only ``InferenceYYNet``, CUDA-graph replay.

``yyfast.inference.optimize_for_inference(model, dtype=..., backend=..., cuda_graph=...)``.
"""
from ..bn_fold import bn_affine, fold_bn_into_1x1, fold_conv_bn
from .cuda_graph import CUDAGraphForward
from .modules import FoldedMBConv, FoldedResidual, FoldedSpan, InferenceYYNet
from .optimize import fold_model, optimize_for_inference

__all__ = ["optimize_for_inference", "fold_model", "InferenceYYNet", "CUDAGraphForward", "FoldedResidual",
           "FoldedMBConv", "FoldedSpan", "bn_affine", "fold_conv_bn", "fold_bn_into_1x1"]
