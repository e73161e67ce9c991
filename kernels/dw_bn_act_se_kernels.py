"""The ``@triton.jit`` kernels of the MBConv span ``DWConv3x3(stride, pad 1) -> BN -> act -> SE``.

The op is memory-bound (9 multiply-adds per output element), so the kernels trade arithmetic for
bytes: the depthwise output ``z`` is *recomputed* from ``x`` in every pass instead of being stored,
and every reduction is a deterministic two-stage one (each program writes per-channel partial
sums of its tile into a small float32 buffer; a second step sums the rows), so no atomics are used
and no program ever waits on another (Triton's interpreter runs programs one after another).

Tiles: a program owns ``BLOCK_P`` output pixels of ONE image (flattened ``ho*Wo+wo``) times
``BLOCK_C`` channels. Keeping a tile inside one image lets the same partial rows serve both the
per-channel BatchNorm sums (summed over images and tiles) and the per-(image, channel) SE sums
(summed over tiles only). Tensors are addressed through their strides, so NCHW, channels_last
and other layouts all work; channels_last (channels contiguous) gives coalesced loads and is the
layout the GPU path is tuned for. Image bases and element offsets are 64-bit.

Passes over the big input ``x`` (``h`` in docs/kernels.md) and why:

* forward, training: 3 -- statistics (BN needs the batch mean/variance of ``z`` before anything can
  be normalised), SE pooling (SE needs ``mean_hw(d)`` before anything can be scaled), output;
* forward, eval: 2 -- SE pooling, output (the statistics are the running ones);
* backward: 2 over ``x`` and ``grad_y`` plus one over the materialised ``grad_z`` -- per-(n, c)
  sums (the SE gradient and the BN gradient sums are needed before ``grad_z`` exists), then
  ``grad_z`` with the depthwise-weight partials, then the transposed depthwise conv for ``grad_x``.
  ``grad_z`` is written once (output-sized) because recomputing it at the 9 taps of every input
  pixel would cost ~9x the arithmetic of the whole op.

The float32 statistics use per-tile means and centred second moments combined with Chan's
formula, so the variance does not lose precision when ``|mean| >> std``.

The launch code (grids, buffers, the tiny SE MLP in torch) is ``dw_bn_act_se.py`` beside this file;
``ACT`` is 0 for GELU and 1 for SiLU (its ``ACT_GELU``/``ACT_SILU``).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _normal_cdf(u):
    """Phi(u) = erfc(-u/sqrt 2)/2 with the Chebyshev-fitted erfc of Numerical Recipes (erfcc):
    relative error < 1.2e-7 in exact arithmetic at every x (about 1e-6 in float32 for |u| < 4),
    and, unlike 1 + erf(u), no cancellation for negative u. It costs one exp and 10 FMAs on the GPU
    and -- unlike tl.math.erf, which Triton's interpreter evaluates one element at a time in
    Python -- is vectorised in the interpreter, which makes the CPU tests ~5x faster."""
    x = -u * 0.7071067811865476
    z = tl.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    p = 0.17087277
    p = -0.82215223 + t * p
    p = 1.48851587 + t * p
    p = -1.13520398 + t * p
    p = 0.27886807 + t * p
    p = -0.18628806 + t * p
    p = 0.09678418 + t * p
    p = 0.37409196 + t * p
    p = 1.00002368 + t * p
    p = -1.26551223 + t * p
    ans = t * tl.exp(p - z * z)
    return 0.5 * tl.where(x >= 0, ans, 2.0 - ans)


@triton.jit
def _act_fwd(u, ACT: tl.constexpr):
    if ACT == 0:  # GELU (erf form): u * Phi(u)
        return u * _normal_cdf(u)
    else:  # SiLU
        return u * tl.sigmoid(u)


@triton.jit
def _act_fwd_grad(u, ACT: tl.constexpr):
    """(act(u), act'(u))."""
    if ACT == 0:
        cdf = _normal_cdf(u)
        pdf = tl.exp(-0.5 * u * u) * 0.3989422804014327
        return u * cdf, cdf + u * pdf
    else:
        sg = tl.sigmoid(u)
        return u * sg, sg * (1.0 + u * (1.0 - sg))


@triton.jit
def _out_tile(pid_t, pid_c, T, HWo, Wo, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Indices of the program's tile: image n (int64), output pixel coordinates and masks."""
    n = (pid_t // T).to(tl.int64)
    t = pid_t % T
    offs_p = t * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = offs_p < HWo
    cmask = offs_c < C
    ho = (offs_p // Wo)[:, None]
    wo = (offs_p % Wo)[:, None]
    mask = pmask[:, None] & cmask[None, :]
    return n, t, ho, wo, offs_c, cmask, mask


@triton.jit
def _dwconv_tile(x_ptr, w_ptr, n, ho, wo, offs_c, cmask, mask, H, W, sxn, sxc, sxh, sxw,
                 STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """z[p, c] = sum_{kh,kw} w[c, kh, kw] * x[n, c, ho*S-1+kh, wo*S-1+kw] (zero padding), float32.

    The column offsets/masks are hoisted out of the tap loop by hand: the GPU compiler would do
    it anyway, but Triton's interpreter pays per operation, and this halves the count.
    """
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    base = x_ptr + n * sxn + (offs_c.to(tl.int64) * sxc)[None, :]
    wbase = w_ptr + offs_c * 9
    w0 = wo * STRIDE - 1
    m0 = mask & (w0 >= 0)
    m1 = mask & (w0 + 1 < W)
    m2 = mask & (w0 + 2 < W)
    o0 = w0.to(tl.int64) * sxw
    o1 = o0 + sxw
    o2 = o1 + sxw
    for kh in tl.static_range(3):
        hi = ho * STRIDE + (kh - 1)
        hok = (hi >= 0) & (hi < H)
        row = base + hi.to(tl.int64) * sxh
        xv = tl.load(row + o0, mask=m0 & hok, other=0.0).to(tl.float32)
        acc += xv * tl.load(wbase + kh * 3, mask=cmask, other=0.0).to(tl.float32)[None, :]
        xv = tl.load(row + o1, mask=m1 & hok, other=0.0).to(tl.float32)
        acc += xv * tl.load(wbase + (kh * 3 + 1), mask=cmask, other=0.0).to(tl.float32)[None, :]
        xv = tl.load(row + o2, mask=m2 & hok, other=0.0).to(tl.float32)
        acc += xv * tl.load(wbase + (kh * 3 + 2), mask=cmask, other=0.0).to(tl.float32)[None, :]
    return acc


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------
@triton.jit
def _bn_input_tile(x_ptr, w_ptr, scale_ptr, shift_ptr, n, ho, wo, offs_c, cmask, mask, H, W,
                   sxn, sxc, sxh, sxw, STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """The recomputed depthwise output z of a tile and its BN affine u = z*scale + shift
    (scale = gamma*rstd, shift = beta - mean*scale per channel): the start of every pass over x."""
    z = _dwconv_tile(x_ptr, w_ptr, n, ho, wo, offs_c, cmask, mask, H, W, sxn, sxc, sxh, sxw,
                     STRIDE, BLOCK_P, BLOCK_C)
    scale = tl.load(scale_ptr + offs_c, mask=cmask, other=0.0)
    shift = tl.load(shift_ptr + offs_c, mask=cmask, other=0.0)
    return z, z * scale[None, :] + shift[None, :]


@triton.jit
def dw_stats_kernel(x_ptr, w_ptr, psum_ptr, pm2_ptr, C, H, W, Wo, HWo, T, sxn, sxc, sxh, sxw,
                    STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Training pass 1 over x: per-tile sum and centred second moment of z = dwconv(x).

    Row ``pid_t`` (= n*T + t) of ``psum``/``pm2`` (shape (N*T, C)) gets ``sum_p z`` and
    ``sum_p (z - mean_tile)^2`` over the tile's valid pixels.
    """
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    n, t, ho, wo, offs_c, cmask, mask = _out_tile(pid_t, pid_c, T, HWo, Wo, C, BLOCK_P, BLOCK_C)
    z = _dwconv_tile(x_ptr, w_ptr, n, ho, wo, offs_c, cmask, mask, H, W, sxn, sxc, sxh, sxw,
                     STRIDE, BLOCK_P, BLOCK_C)
    cnt = tl.minimum(HWo - t * BLOCK_P, BLOCK_P).to(tl.float32)
    s = tl.sum(z, axis=0)  # masked z are exactly 0
    dz = tl.where(mask, z - (s / cnt)[None, :], 0.0)
    m2 = tl.sum(dz * dz, axis=0)
    row = pid_t.to(tl.int64) * C
    tl.store(psum_ptr + row + offs_c, s, mask=cmask)
    tl.store(pm2_ptr + row + offs_c, m2, mask=cmask)


@triton.jit
def bn_finalize_kernel(psum_ptr, pm2_ptr, mean_in_ptr, var_in_ptr, gamma_ptr, beta_ptr,
                       mean_ptr, var_ptr, scale_ptr, shift_ptr, C, R, T, HWo, eps,
                       TRAINING: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """Per-channel statistics and the folded BN affine ``u = z*scale + shift``.

    Training: reduce the R = N*T partial rows (mean first, then Chan's combination of the centred
    moments: M2 = sum_t M2_t + cnt_t (mean_t - mean)^2); the variance is the biased one.
    Eval: the given (running) mean and variance. scale = gamma/sqrt(var+eps), shift = beta - mean*scale.
    """
    pid_c = tl.program_id(0)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    if TRAINING:
        total = (R // T) * HWo
        # The row loops are `while` loops, not `for r0 in range(0, R, BLOCK_R)`: Triton 3.6's
        # interpreter turns the runtime scalar R into a shape-(1,) NumPy array whose int() (what
        # range() calls) NumPy >= 2.4 refuses ("only 0-dimensional arrays can be converted to Python
        # scalars"; Triton >= 3.7 squeezes it first), while a loop condition only needs bool(),
        # which any size-1 array gives. Compiled, both forms visit the same rows in the same order.
        acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
        r0 = 0
        while r0 < R:
            rows = r0 + tl.arange(0, BLOCK_R)
            m = (rows < R)[:, None] & cmask[None, :]
            acc += tl.load(psum_ptr + rows.to(tl.int64)[:, None] * C + offs_c[None, :], mask=m, other=0.0)
            r0 += BLOCK_R
        mean = tl.sum(acc, axis=0) / total
        acc2 = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
        r0 = 0
        while r0 < R:
            rows = r0 + tl.arange(0, BLOCK_R)
            rmask = rows < R
            m = rmask[:, None] & cmask[None, :]
            off = rows.to(tl.int64)[:, None] * C + offs_c[None, :]
            cnt = tl.minimum(HWo - (rows % T) * BLOCK_P, BLOCK_P).to(tl.float32)[:, None]
            s = tl.load(psum_ptr + off, mask=m, other=0.0)
            m2 = tl.load(pm2_ptr + off, mask=m, other=0.0)
            dm = s / cnt - mean[None, :]
            acc2 += tl.where(m, m2 + cnt * dm * dm, 0.0)
            r0 += BLOCK_R
        var = tl.sum(acc2, axis=0) / total
    else:
        mean = tl.load(mean_in_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
        var = tl.load(var_in_ptr + offs_c, mask=cmask, other=1.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(var + eps)
    gamma = tl.load(gamma_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
    scale = gamma * rstd
    tl.store(mean_ptr + offs_c, mean, mask=cmask)
    tl.store(var_ptr + offs_c, var, mask=cmask)
    tl.store(scale_ptr + offs_c, scale, mask=cmask)
    tl.store(shift_ptr + offs_c, beta - mean * scale, mask=cmask)


@triton.jit
def dw_pool_kernel(x_ptr, w_ptr, scale_ptr, shift_ptr, ppool_ptr, C, H, W, Wo, HWo, T,
                   sxn, sxc, sxh, sxw, ACT: tl.constexpr, STRIDE: tl.constexpr,
                   BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward pass over x for SE: d = act(z*scale + shift); row pid_t of ppool gets sum_p d."""
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    n, t, ho, wo, offs_c, cmask, mask = _out_tile(pid_t, pid_c, T, HWo, Wo, C, BLOCK_P, BLOCK_C)
    _, u = _bn_input_tile(x_ptr, w_ptr, scale_ptr, shift_ptr, n, ho, wo, offs_c, cmask, mask, H, W,
                          sxn, sxc, sxh, sxw, STRIDE, BLOCK_P, BLOCK_C)
    d = _act_fwd(u, ACT)
    part = tl.sum(tl.where(mask, d, 0.0), axis=0)
    tl.store(ppool_ptr + pid_t.to(tl.int64) * C + offs_c, part, mask=cmask)


@triton.jit
def dw_output_kernel(x_ptr, w_ptr, scale_ptr, shift_ptr, se_ptr, y_ptr, C, H, W, Wo, HWo, T,
                     sxn, sxc, sxh, sxw, syn, syc, syh, syw, ACT: tl.constexpr, STRIDE: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Last forward pass over x: y = act(z*scale + shift) * s[n, c], written in y's dtype."""
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    n, t, ho, wo, offs_c, cmask, mask = _out_tile(pid_t, pid_c, T, HWo, Wo, C, BLOCK_P, BLOCK_C)
    _, u = _bn_input_tile(x_ptr, w_ptr, scale_ptr, shift_ptr, n, ho, wo, offs_c, cmask, mask, H, W,
                          sxn, sxc, sxh, sxw, STRIDE, BLOCK_P, BLOCK_C)
    s = tl.load(se_ptr + n * C + offs_c, mask=cmask, other=0.0)
    y = _act_fwd(u, ACT) * s[None, :]
    off = n * syn + (offs_c.to(tl.int64) * syc)[None, :] + ho.to(tl.int64) * syh + wo.to(tl.int64) * syw
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------
@triton.jit
def dw_bwd_sums_kernel(x_ptr, w_ptr, gy_ptr, scale_ptr, shift_ptr, mean_ptr, rstd_ptr, psums_ptr,
                       C, H, W, Wo, HWo, T, plane, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw,
                       ACT: tl.constexpr, STRIDE: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """Backward pass 1 over x and grad_y: five per-tile sums per channel.

    With a = act'(u) and zhat = (z - mean)*rstd, rows pid_t of the five (R, C) planes of psums get
    sum_p gy*d, sum_p gy*a, sum_p gy*a*zhat, sum_p a, sum_p a*zhat. Since
    gu = (gy*s[n,c] + gp[n,c]/HWo) * a, these give sum(gu) and sum(gu*zhat) once the SE gradient
    gp (which needs sum_p gy*d first) is known -- without another pass over the big tensors.
    ``plane`` = R*C, the distance between the planes (a host int, so Triton types it i64 when large;
    scalar int arguments equal to 1 are specialised to constants, so no ``.to`` is called on them).
    """
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    n, t, ho, wo, offs_c, cmask, mask = _out_tile(pid_t, pid_c, T, HWo, Wo, C, BLOCK_P, BLOCK_C)
    z, u = _bn_input_tile(x_ptr, w_ptr, scale_ptr, shift_ptr, n, ho, wo, offs_c, cmask, mask, H, W,
                          sxn, sxc, sxh, sxw, STRIDE, BLOCK_P, BLOCK_C)
    mean = tl.load(mean_ptr + offs_c, mask=cmask, other=0.0)
    rstd = tl.load(rstd_ptr + offs_c, mask=cmask, other=0.0)
    d, a = _act_fwd_grad(u, ACT)
    zhat = (z - mean[None, :]) * rstd[None, :]
    goff = n * sgn + (offs_c.to(tl.int64) * sgc)[None, :] + ho.to(tl.int64) * sgh + wo.to(tl.int64) * sgw
    gy = tl.load(gy_ptr + goff, mask=mask, other=0.0).to(tl.float32)
    a = tl.where(mask, a, 0.0)
    d = tl.where(mask, d, 0.0)
    ga = gy * a
    out = psums_ptr + pid_t.to(tl.int64) * C + offs_c
    tl.store(out, tl.sum(gy * d, axis=0), mask=cmask)
    tl.store(out + plane, tl.sum(ga, axis=0), mask=cmask)
    tl.store(out + 2 * plane, tl.sum(ga * zhat, axis=0), mask=cmask)
    tl.store(out + 3 * plane, tl.sum(a, axis=0), mask=cmask)
    tl.store(out + 4 * plane, tl.sum(a * zhat, axis=0), mask=cmask)


@triton.jit
def dw_bwd_gz_kernel(x_ptr, w_ptr, gy_ptr, scale_ptr, shift_ptr, mean_ptr, rstd_ptr, se_ptr, gpn_ptr,
                     k1_ptr, k2_ptr, k3_ptr, gz_ptr, pgw_ptr, C, H, W, Wo, HWo, T, plane,
                     sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, szn, szc, szh, szw,
                     ACT: tl.constexpr, STRIDE: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """Backward pass 2 over x and grad_y: grad_z, and the depthwise-weight partial sums.

    gu = (gy*s[n,c] + gpn[n,c]) * act'(u);  gz = k1*(gu - k2 - zhat*k3)
    (training: k1 = gamma*rstd, k2 = mean(gu), k3 = mean(gu*zhat); eval: k2 = k3 = 0).
    gz is written (in gz's dtype); pgw[k, pid_t, c] = sum_p gz * x_tap_k for the 9 taps k.
    """
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    n, t, ho, wo, offs_c, cmask, mask = _out_tile(pid_t, pid_c, T, HWo, Wo, C, BLOCK_P, BLOCK_C)
    z, u = _bn_input_tile(x_ptr, w_ptr, scale_ptr, shift_ptr, n, ho, wo, offs_c, cmask, mask, H, W,
                          sxn, sxc, sxh, sxw, STRIDE, BLOCK_P, BLOCK_C)
    mean = tl.load(mean_ptr + offs_c, mask=cmask, other=0.0)
    rstd = tl.load(rstd_ptr + offs_c, mask=cmask, other=0.0)
    k1 = tl.load(k1_ptr + offs_c, mask=cmask, other=0.0)
    k2 = tl.load(k2_ptr + offs_c, mask=cmask, other=0.0)
    k3 = tl.load(k3_ptr + offs_c, mask=cmask, other=0.0)
    s = tl.load(se_ptr + n * C + offs_c, mask=cmask, other=0.0)
    gpn = tl.load(gpn_ptr + n * C + offs_c, mask=cmask, other=0.0)
    d, a = _act_fwd_grad(u, ACT)
    zhat = (z - mean[None, :]) * rstd[None, :]
    goff = n * sgn + (offs_c.to(tl.int64) * sgc)[None, :] + ho.to(tl.int64) * sgh + wo.to(tl.int64) * sgw
    gy = tl.load(gy_ptr + goff, mask=mask, other=0.0).to(tl.float32)
    gu = (gy * s[None, :] + gpn[None, :]) * a
    gz = k1[None, :] * (gu - k2[None, :] - zhat * k3[None, :])
    gz = tl.where(mask, gz, 0.0)
    zoff = n * szn + (offs_c.to(tl.int64) * szc)[None, :] + ho.to(tl.int64) * szh + wo.to(tl.int64) * szw
    gz_st = gz.to(gz_ptr.dtype.element_ty)
    tl.store(gz_ptr + zoff, gz_st, mask=mask)
    # The weight gradient uses the rounded gz that grad_x will also see, so both agree.
    gz = gz_st.to(tl.float32)
    base = x_ptr + n * sxn + (offs_c.to(tl.int64) * sxc)[None, :]
    out = pgw_ptr + pid_t.to(tl.int64) * C + offs_c
    for kh in tl.static_range(3):
        hi = ho * STRIDE + (kh - 1)
        hmask = mask & (hi >= 0) & (hi < H)
        for kw in tl.static_range(3):
            wi = wo * STRIDE + (kw - 1)
            m = hmask & (wi >= 0) & (wi < W)
            xv = tl.load(base + hi.to(tl.int64) * sxh + wi.to(tl.int64) * sxw, mask=m, other=0.0)
            tl.store(out + (kh * 3 + kw) * plane, tl.sum(xv.to(tl.float32) * gz, axis=0), mask=cmask)


@triton.jit
def _transposed_tap(num, limit, STRIDE: tl.constexpr):
    """For the transposed depthwise conv along one axis: the output index ``num / STRIDE`` that an
    input position reaches through one tap (``num`` = position + 1 - tap), and whether it exists
    (the division is exact and the index lies in [0, limit))."""
    if STRIDE == 1:
        idx = num
        ok = (num >= 0) & (num < limit)
    else:
        idx = num // 2
        ok = (num >= 0) & ((num % 2) == 0) & (idx < limit)
    return idx, ok


@triton.jit
def dw_bwd_gx_kernel(gz_ptr, w_ptr, gx_ptr, C, H, W, Ho, Wo, HW, T,
                     szn, szc, szh, szw, sxn, sxc, sxh, sxw, STRIDE: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Backward pass over grad_z: grad_x = transposed depthwise conv of gz (one program per input tile).

    gx[n, c, i, j] = sum_{kh,kw} w[c,kh,kw] * gz[n, c, (i+1-kh)/S, (j+1-kw)/S] over the taps
    where the division is exact and lands inside the output.
    """
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    n, t, i, j, offs_c, cmask, mask = _out_tile(pid_t, pid_c, T, HW, W, C, BLOCK_P, BLOCK_C)
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    base = gz_ptr + n * szn + (offs_c.to(tl.int64) * szc)[None, :]
    for kh in tl.static_range(3):
        oh, oh_ok = _transposed_tap(i + (1 - kh), Ho, STRIDE)
        hmask = mask & oh_ok
        for kw in tl.static_range(3):
            ow, ow_ok = _transposed_tap(j + (1 - kw), Wo, STRIDE)
            m = hmask & ow_ok
            g = tl.load(base + oh.to(tl.int64) * szh + ow.to(tl.int64) * szw, mask=m, other=0.0)
            wv = tl.load(w_ptr + offs_c * 9 + (kh * 3 + kw), mask=cmask, other=0.0)
            acc += g.to(tl.float32) * wv.to(tl.float32)[None, :]
    off = n * sxn + (offs_c.to(tl.int64) * sxc)[None, :] + i.to(tl.int64) * sxh + j.to(tl.int64) * sxw
    tl.store(gx_ptr + off, acc.to(gx_ptr.dtype.element_ty), mask=mask)
