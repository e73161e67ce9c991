"""Launch code of the Triton MBConv span ``DWConv3x3 -> BN -> act -> SE``: tensors in, tensors out.

The ``@triton.jit`` kernels are in ``dw_bn_act_se_kernels.py`` (their docstring gives the passes
over memory); this file picks tiles, allocates the small float32 partial buffers, launches the
kernels, and runs the tiny SE MLP in torch. No autograd here: ``yyfast/ops/triton_ops.py``
registers ``forward``/``backward`` as the ops ``yyfast::dw_bn_act_se_triton``/``..._backward``,
whose contract (``yyfast/ops/schemas.py``) is the C++/CUDA ops' one.
"""
from __future__ import annotations

import contextlib

import torch
import triton

from .dw_bn_act_se_kernels import (bn_finalize_kernel, dw_bwd_gx_kernel, dw_bwd_gz_kernel, dw_bwd_sums_kernel,
                                   dw_output_kernel, dw_pool_kernel, dw_stats_kernel)
from .output_spec import output_format, span_output_size, stats_dtype

from yyfast import activations
from yyfast.activations import ACT_CODES  # the ACT constexpr: 0 GELU, 1 SiLU, as the C++ kernels' ActKind

#: (BLOCK_P, BLOCK_C) forced by tests to exercise multi-tile / multi-channel-block paths; None = auto.
_FORCED_BLOCKS = None


@contextlib.contextmanager
def forced_blocks(block_p: int, block_c: int):
    """Use these tile sizes (powers of two) inside the block, e.g. small ones to test the reductions."""
    global _FORCED_BLOCKS
    prev, _FORCED_BLOCKS = _FORCED_BLOCKS, (block_p, block_c)
    try:
        yield
    finally:
        _FORCED_BLOCKS = prev


def _pick_blocks(is_cuda: bool, channels: int, pixels: int):
    """Tile sizes. GPU: <= 64 channels x enough pixels for ~2K elements a program (coalesced along
    C in channels_last, many programs for occupancy). Interpreter: big tiles, because its cost is
    per program and per op, not per element."""
    if _FORCED_BLOCKS is not None:
        return _FORCED_BLOCKS
    bc = triton.next_power_of_2(channels)
    if is_cuda:
        bc = min(max(bc, 16), 64)
        bp = min(max(2048 // bc, 16), max(triton.next_power_of_2(pixels), 16))
    else:
        bc = min(bc, 128)
        bp = min(max(65536 // bc, 1), triton.next_power_of_2(pixels))
    return bp, bc


def _kernel_layout(x: torch.Tensor) -> torch.Tensor:
    """On the GPU the kernels are tuned for channels_last (C contiguous: coalesced loads), so other
    layouts are converted; the interpreter reads any strides directly."""
    if x.is_cuda and not x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _bn_coefficients(psum, pm2, mean_in, var_in, gamma, beta, C, R, T, HWo, eps, training, bp, device):
    """Launch bn_finalize_kernel: (mean, var, scale, shift), float32 (C,)."""
    f32 = dict(dtype=torch.float32, device=device)
    mean, var, scale, shift = (torch.empty(C, **f32) for _ in range(4))
    bc = min(triton.next_power_of_2(C), 64 if gamma.is_cuda else 1024)
    br = min(triton.next_power_of_2(max(R, 1)), 32 if gamma.is_cuda else 256)
    bn_finalize_kernel[(triton.cdiv(C, bc),)](
        psum, pm2, mean_in, var_in, gamma, beta, mean, var, scale, shift, C, R, T, HWo, float(eps),
        TRAINING=training, BLOCK_P=bp, BLOCK_R=br, BLOCK_C=bc)
    return mean, var, scale, shift


def _se_mlp(pooled, se_w1, se_b1, se_w2, se_b2, act: str):
    """The SE MLP's pre-activations ``h1 = pooled W1^T + b1`` (N, hidden) and ``h2 = act(h1) W2^T + b2``
    (N, C), float32, in torch (cuBLAS on the GPU).

    The backward recomputes them from ``pooled`` (the same ops on the same inputs as the forward)
    rather than having the forward save them, so both backends save the same tensors (the op
    contract, ``yyfast/ops/schemas.py``). The cost is two (N x C) by (C x hidden) products, hidden =
    C/se_reduction (C/4 by default): N*C*C/2 multiply-adds, 8.4 M for N = C = 256, reading only
    ``pooled`` and the SE weights, against a backward that reads the N*C*H*W-element x and grad_y
    twice each (and already runs four such products for the SE gradients)."""
    h1 = torch.addmm(se_b1.float(), pooled, se_w1.float().t())
    h2 = torch.addmm(se_b2.float(), activations.act(act)(h1), se_w2.float().t())
    return h1, h2


def forward(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2,
            stride: int, eps: float, training: bool, act: str, gate: str):
    """Returns ``(y, mean, var, pooled)``: y in x's dtype and ``output_format(x)``; mean/var the
    statistics normalised with (training: the batch mean and biased variance), pooled the (N, C) SE
    input ``mean_hw(act(BN(z)))``, the three in ``stats_dtype(x)``."""
    N, C, H, W = x.shape
    Ho, Wo = span_output_size(H, W, stride)
    HWo = Ho * Wo
    xk = _kernel_layout(x)
    w9 = dw_weight.reshape(C, 9).contiguous()
    bp, bc = _pick_blocks(x.is_cuda, C, HWo)
    T = triton.cdiv(HWo, bp)
    R = N * T
    grid = (R, triton.cdiv(C, bc))
    ACT = ACT_CODES[act]
    dev = x.device
    sx = xk.stride()
    gamma, beta = bn_weight.contiguous(), bn_bias.contiguous()
    if training:
        psum = torch.empty((R, C), dtype=torch.float32, device=dev)
        pm2 = torch.empty((R, C), dtype=torch.float32, device=dev)
        dw_stats_kernel[grid](xk, w9, psum, pm2, C, H, W, Wo, HWo, T, *sx,
                              STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc)
        mean, var, scale, shift = _bn_coefficients(psum, pm2, gamma, gamma, gamma, beta, C, R, T, HWo, eps,
                                                   True, bp, dev)
    else:
        rm, rv = running_mean.contiguous(), running_var.contiguous()
        mean, var, scale, shift = _bn_coefficients(rm, rv, rm, rv, gamma, beta, C, R, T, HWo, eps, False, bp, dev)
    ppool = torch.empty((R, C), dtype=torch.float32, device=dev)
    dw_pool_kernel[grid](xk, w9, scale, shift, ppool, C, H, W, Wo, HWo, T, *sx,
                         ACT=ACT, STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc)
    pooled = ppool.view(N, T, C).sum(1) / HWo
    _h1, h2 = _se_mlp(pooled, se_w1, se_b1, se_w2, se_b2, act)
    s = activations.gate(gate)(h2).contiguous()
    y = torch.empty((N, C, Ho, Wo), dtype=x.dtype, device=dev, memory_format=output_format(x))
    dw_output_kernel[grid](xk, w9, scale, shift, s, y, C, H, W, Wo, HWo, T, *sx, *y.stride(),
                           ACT=ACT, STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc)
    acc = stats_dtype(x)
    return y, mean.to(acc), var.to(acc), pooled.to(acc)


def _se_backward(gy_d, pooled, se_w1, se_b1, se_w2, se_b2, HWo: int, act: str, gate: str):
    """The SE MLP's backward on the tiny (N, C) tensors, float32, from ``gy_d`` = sum_p grad_y*d.
    Returns (s, gpn, g_w1, g_b1, g_w2, g_b2): the gate s, and gpn = d loss / d d through the pooling
    per (n, c)."""
    h1, h2 = _se_mlp(pooled, se_w1, se_b1, se_w2, se_b2, act)
    a1 = activations.act(act)(h1)
    s = activations.gate(gate)(h2).contiguous()
    gh2 = gy_d * activations.gate_grad(gate)(h2)
    g_w2, g_b2 = gh2.t() @ a1, gh2.sum(0)
    gh1 = (gh2 @ se_w2.float()) * activations.act_grad(act)(h1)
    g_w1, g_b1 = gh1.t() @ pooled, gh1.sum(0)
    gpn = ((gh1 @ se_w1.float()) / HWo).contiguous()
    return s, gpn, g_w1, g_b1, g_w2, g_b2


def backward(grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2, se_b2,
             stride: int, eps: float, training: bool, act: str, gate: str):
    """Gradients (x, dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2), each in its
    tensor's dtype, from ``forward``'s mean/var (the statistics it normalised with) and pooled."""
    N, C, H, W = x.shape
    Ho, Wo = span_output_size(H, W, stride)
    HWo = Ho * Wo
    dev = x.device
    xk = _kernel_layout(x)
    gy = _kernel_layout(grad_y)
    w9 = dw_weight.reshape(C, 9).contiguous()
    bp, bc = _pick_blocks(x.is_cuda, C, HWo)
    T = triton.cdiv(HWo, bp)
    R = N * T
    grid = (R, triton.cdiv(C, bc))
    ACT = ACT_CODES[act]
    sx, sg = xk.stride(), gy.stride()
    gamma = bn_weight.contiguous()
    mean, var = mean.float().contiguous(), var.float().contiguous()
    _, _, scale, shift = _bn_coefficients(mean, var, mean, var, gamma, bn_bias.contiguous(), C, R, T, HWo, eps,
                                          False, bp, dev)
    rstd = torch.rsqrt(var + eps)
    psums = torch.empty((5, R, C), dtype=torch.float32, device=dev)
    dw_bwd_sums_kernel[grid](xk, w9, gy, scale, shift, mean, rstd, psums, C, H, W, Wo, HWo, T, R * C, *sx, *sg,
                             ACT=ACT, STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc)
    sums = psums.view(5, N, T, C).sum(2)  # (5, N, C)
    s, gpn, g_w1, g_b1, g_w2, g_b2 = _se_backward(sums[0], pooled.float(), se_w1, se_b1, se_w2, se_b2, HWo, act,
                                                  gate)
    sum_gu = (s * sums[1] + gpn * sums[3]).sum(0)
    sum_guz = (s * sums[2] + gpn * sums[4]).sum(0)
    k1 = (gamma.float() * rstd).contiguous()
    if training:
        count = N * HWo
        k2, k3 = (sum_gu / count).contiguous(), (sum_guz / count).contiguous()
    else:
        k2 = k3 = torch.zeros_like(k1)
    gz = torch.empty((N, C, Ho, Wo), dtype=x.dtype, device=dev, memory_format=output_format(xk))
    pgw = torch.empty((9, R, C), dtype=torch.float32, device=dev)
    dw_bwd_gz_kernel[grid](xk, w9, gy, scale, shift, mean, rstd, s, gpn, k1, k2, k3, gz, pgw,
                           C, H, W, Wo, HWo, T, R * C, *sx, *sg, *gz.stride(),
                           ACT=ACT, STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc)
    gx = torch.empty((N, C, H, W), dtype=x.dtype, device=dev, memory_format=output_format(x))
    bpi, bci = _pick_blocks(x.is_cuda, C, H * W)
    Ti = triton.cdiv(H * W, bpi)
    dw_bwd_gx_kernel[(N * Ti, triton.cdiv(C, bci))](gz, w9, gx, C, H, W, Ho, Wo, H * W, Ti, *gz.stride(),
                                                  *gx.stride(), STRIDE=stride, BLOCK_P=bpi, BLOCK_C=bci)
    g_dw = pgw.view(9, R, C).sum(1).t().contiguous().view(C, 1, 3, 3)
    return (gx, g_dw.to(dw_weight.dtype), sum_guz.to(bn_weight.dtype), sum_gu.to(bn_bias.dtype),
            g_w1.to(se_w1.dtype), g_b1.to(se_b1.dtype), g_w2.to(se_w2.dtype), g_b2.to(se_b2.dtype))
