"""StyleGAN2 building blocks and the image-conditioned triplane backbone, in pure PyTorch.

No compiled extension: FIR resampling is a depthwise conv / conv_transpose,
bias+activation is plain elementwise code (``torch.compile`` fuses it), and
modulated convolution has two exact forms: a grouped conv with per-sample
weights ("fused", best at batch 1) and "modulate the activations" (one dense
conv shared by the batch, best for training batches and bf16 autocast).
Everything is twice differentiable in eager mode (R1 needs it).

Layer semantics (equalised learning rate, weight demodulation, FIR padding
rules, conv_clamp) follow StyleGAN2/EG3D so that sizes and behaviour carry over.

One file of about 850 lines, as EG3D's networks_stylegan2.py is: its layers depend on each other
(resampling -> modulated conv -> synthesis/mapping/discriminator blocks), and kept together they can be
compared with EG3D's line by line.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)

# ----------------------------------------------------------------------------
# bias + activation


def _lrelu(x):
    return F.leaky_relu(x, 0.2)


# name -> (function, default gain); gains keep activations' variance at 1
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, SQRT2),
    "lrelu": (_lrelu, SQRT2),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "softplus": (F.softplus, 1.0),
    "silu": (F.silu, SQRT2),
}


def bias_act(x, b=None, dim=1, act="linear", gain=None, clamp=None):
    """``clamp(act(x + b) * gain)``; ``gain=None`` uses the activation's default gain."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    fn, def_gain = ACTIVATIONS[act]
    x = fn(x)
    gain = def_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ----------------------------------------------------------------------------
# FIR filtering (upfirdn2d semantics: upsample by zero insertion, pad, convolve, decimate)


def setup_filter(f=(1, 3, 3, 1), normalize=True, flip_filter=False, gain=1, separable=True, device=None):
    """FIR filter: 1-D taps [n] applied along both axes (separable; the 2-D filter is their
    outer product) or a 2-D filter [fh, fw]; normalised so the 2-D filter sums to ``gain``."""
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return (f * gain ** (f.ndim / 2)).to(device)


def _as2d(f):
    return torch.outer(f, f) if f.ndim == 1 else f


def _fsize(f):
    return (f.shape[0], f.shape[0]) if f.ndim == 1 else tuple(f.shape)


def _parse_padding(padding):
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    return tuple(padding)


def _depthwise(f, x):
    """Filter as a depthwise conv weight [C, 1, fh, fw] in x's dtype."""
    f = _as2d(f)
    return f.to(x.dtype)[None, None].expand(x.shape[1], 1, f.shape[0], f.shape[1])


# How per-channel FIR filtering runs.  "taps": separable filters as sums of shifted
# slices (plain elementwise ops: torch.compile fuses them into one kernel, and
# every derivative is elementwise too); "batch": channels folded into the batch and
# a dense 1-channel conv; "depthwise": groups=C conv (cuDNN's grouped double
# backward was measured at 8.4 s per R1 step on an H100).  2-D filters use "batch"
# when "taps" is selected.
FIR_IMPL = "taps"


def _shift(x, dim, start, length, step=1):
    if step == 1:
        return x.narrow(dim, start, length)
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(start, start + (length - 1) * step + 1, step)
    return x[tuple(idx)]


def _taps1d(x, f, dim, stride=1):
    """Valid correlation of x with taps f along ``dim`` (x already padded), with stride."""
    n = f.shape[0]
    L = (x.shape[dim] - n) // stride + 1
    f = f.to(x.dtype)
    y = _shift(x, dim, 0, L, stride) * f[0]
    for k in range(1, n):
        y = y + _shift(x, dim, k, L, stride) * f[k]
    return y


def _taps1d_transpose(x, g, dim, up):
    """Full transposed convolution along ``dim`` (stride ``up``, kernel g) by polyphase taps."""
    n, L = g.shape[0], x.shape[dim]
    J = -(-n // up)  # taps per phase
    pad = [0, 0] * (x.ndim - 1 - dim) + [J - 1, J - 1]
    xp = F.pad(x, pad)
    g = g.to(x.dtype)
    phases = []
    for p in range(up):
        acc = None
        for j in range(J):
            if up * j + p < n:  # y[up*m + p] = sum_j g[up*j + p] * x[m - j]
                t = xp.narrow(dim, J - 1 - j, L + J - 1) * g[up * j + p]
                acc = t if acc is None else acc + t
        phases.append(acc if acc is not None else torch.zeros_like(xp.narrow(dim, 0, L + J - 1)))
    y = torch.stack(phases, dim=dim + 1).flatten(dim, dim + 1)
    return y.narrow(dim, 0, (L - 1) * up + n)


def _fir_conv(x, f, stride=1, padding=0, transpose=False):
    """Apply filter f (1-D separable or 2-D) to every channel of x with conv2d semantics
    (correlation; ``transpose``: conv_transpose2d semantics, stride = upsampling factor)."""
    B, C, H, W = x.shape
    if FIR_IMPL == "taps" and f.ndim == 1:
        if transpose:
            return _taps1d_transpose(_taps1d_transpose(x, f, 3, stride), f, 2, stride)
        if padding:
            x = F.pad(x, [padding] * 4)
        return _taps1d(_taps1d(x, f, 3, stride), f, 2, stride)
    if FIR_IMPL == "depthwise":
        w = _depthwise(f, x)
        if transpose:
            return F.conv_transpose2d(x, w, stride=stride, groups=C)
        return F.conv2d(x, w, stride=stride, padding=padding, groups=C)
    w = _as2d(f).to(x.dtype)[None, None]
    x = x.reshape(B * C, 1, H, W)
    x = F.conv_transpose2d(x, w, stride=stride) if transpose else F.conv2d(x, w, stride=stride, padding=padding)
    return x.reshape(B, C, x.shape[2], x.shape[3])


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Upsample (zero insertion), pad (negative = crop), FIR filter, downsample; x [B,C,H,W]."""
    px0, px1, py0, py1 = _parse_padding(padding)
    B, C, H, W = x.shape
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(B, C, H * up, W * up)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))  # conv2d correlates; upfirdn2d convolves
    if gain != 1:
        f = f * gain ** (f.ndim / 2)
    if px0 == px1 == py0 == py1 and px0 >= 0:
        return _fir_conv(x, f, stride=down, padding=px0)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    return _fir_conv(x, f, stride=down)


def filter2d(x, f, padding=0, flip_filter=False, gain=1):
    """Filter keeping the size (for odd or even filters, like StyleGAN's filter2d)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fh, fw = _fsize(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1):
    """FIR upsampling, output pixel centres aligned with the input's (no half-pixel shift)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fh, fw = _fsize(f)
    p = [px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2]
    # fast path: a strided transposed conv is the zero-insertion + full convolution;
    # crop it to upfirdn2d's window instead of convolving inserted zeros.
    sx, sy = fw - 1 - p[0], fh - 1 - p[2]
    if sx >= 0 and sy >= 0:
        B, C, H, W = x.shape
        g = f if flip_filter is False else f.flip(list(range(f.ndim)))
        y = _fir_conv(x, g * (gain * up * up) ** (f.ndim / 2), stride=up, transpose=True)
        Ho = H * up + p[2] + p[3] - fh + 1
        Wo = W * up + p[0] + p[1] - fw + 1
        if sy + Ho <= y.shape[2] and sx + Wo <= y.shape[3]:
            return y[:, :, sy: sy + Ho, sx: sx + Wo]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1):
    """FIR downsampling (filter at the strided positions only), aligned with upsample2d."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fh, fw = _fsize(f)
    p = [px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


def gaussian_filter(sigma):
    """Normalised 2-D Gaussian FIR filter (EG3D's discriminator blur), radius 3 sigma."""
    r = max(int(math.floor(sigma * 3)), 1)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    return setup_filter(torch.exp2(-(t / sigma).square()))


# ----------------------------------------------------------------------------
# convolution with resampling


# Where conv2d_resample folds the FIR filter into the conv kernel (one dense conv instead of conv + a
# per-channel filter pass).  Folding multiplies the conv's multiply-adds: x4 for 3x3 up/down convs (6x6
# kernel), x16 for 1x1 down convs (the discriminator's skips: 4x4 kernel).  In eager mode the filter pass
# is several memory-bound kernels and folding wins (docs/models_networks.md); under torch.compile the
# filter fuses into one kernel and the unfolded convs do 1.7x (G) to 2.3x (D) fewer FLOPs: set_fold(False).
FOLD = {"up": True, "down": True, "down_1x1": True}


@contextlib.contextmanager
def fold_setting(*args, **kw):
    """set_fold(*args, **kw) inside the block (e.g. the eager R1 phase of a compiled run: folded convs
    there), the previous setting after it."""
    old = set_fold(*args, **kw)
    try:
        yield
    finally:
        set_fold(**old)


def set_fold(every: bool | None = None, *, up: bool | None = None, down: bool | None = None,
             down_1x1: bool | None = None) -> dict:
    """Choose where FIR filters are folded into resampling convs: ``every`` for all three kinds, then the
    named kinds (None = unchanged); returns the old setting (``set_fold(**old)`` restores it).  Same
    numbers either way (tested); speed only."""
    old = dict(FOLD)
    if every is not None:
        FOLD.update(up=bool(every), down=bool(every), down_1x1=bool(every))
    for k, v in (("up", up), ("down", down), ("down_1x1", down_1x1)):
        if v is not None:
            FOLD[k] = bool(v)
    return old


class _Conv2d(torch.autograd.Function):
    """F.conv2d whose input gradient is a differentiable conv_transpose2d.  Autograd's own double backward
    of a conv (R1 differentiates D twice) computes the weight term as a forward conv whose kernel is the
    whole gradient image (512x512 at D's first layers): generic cuDNN kernels, 25-80 ms each on an H100.
    Through conv_transpose2d the same term is cuDNN's weight-gradient kernel.  Same numbers."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, groups)
        return F.conv2d(x, w, None, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, groups = ctx.conf
        gx = gw = None
        if ctx.needs_input_grad[0]:
            out_pad = [x.shape[i] - ((gy.shape[i] - 1) * stride - 2 * padding + w.shape[i]) for i in (2, 3)]
            gx = F.conv_transpose2d(gy, w, None, stride, padding, out_pad, groups)
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(gy, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False,
                                                     [0, 0], groups, [False, True, False])[1]
        return gx, gw, None, None, None


# conv2d() routes eager convs that need gradients through _Conv2d (fast R1); False = always F.conv2d
TWICE_DIFFERENTIABLE_CONV = True


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for an NHWC activation (set_channels_last), else contiguous_format: joins and adds
    that take it keep a channels-last network channels-last, backward included (a mixed-layout add or cat
    gives NCHW)."""
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


# Compiled graphs: a channels-last conv output gets a channels-last gradient (_ChannelsLastGrad).
CHANNELS_LAST_GRADS = True


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose gradient is made channels-last.  In a compiled backward graph, inductor gives
    convolution_backward its gradient in the layout autograd's trace has; the backward of slicing and
    padding (the FIR filters after transposed convs, the crops) produces NCHW there, so cuDNN copied each
    such gradient to NHWC, twice per conv (data and weight gradients): 1 GiB copies at the super-resolution's
    512 px.  Made channels-last here, the conversion fuses into the kernel that computes the gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.contiguous(memory_format=torch.channels_last)


def channels_last_grad(y: torch.Tensor) -> torch.Tensor:
    """y, with a channels-last gradient when y is a channels-last 4-D activation inside a compiled graph
    (CHANNELS_LAST_GRADS); y itself otherwise."""
    if CHANNELS_LAST_GRADS and torch.compiler.is_compiling() and y.requires_grad \
            and memory_format_of(y) is torch.channels_last:
        return _ChannelsLastGrad.apply(y)
    return y


def conv2d(x, w, stride: int = 1, padding: int = 0, groups: int = 1):
    """F.conv2d on activations (int stride and padding).  In eager mode with gradients, through _Conv2d
    (cuDNN kernels for R1's double backward); compiled graphs (first derivatives only) call F.conv2d."""
    if torch.compiler.is_compiling():
        return channels_last_grad(F.conv2d(x, w, stride=stride, padding=padding, groups=groups))
    if not (TWICE_DIFFERENTIABLE_CONV and torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)):
        return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)
    dev = x.device.type
    if torch.is_autocast_enabled(dev):      # cast as autocast would, then run the Function without it
        dt = torch.get_autocast_dtype(dev)
        x, w = x.to(dt), w.to(dt)
        with torch.autocast(dev, enabled=False):
            return _Conv2d.apply(x, w, stride, padding, groups)
    return _Conv2d.apply(x, w, stride, padding, groups)


def set_channels_last(module: nn.Module, on: bool = True) -> int:
    """NHWC activations in every block of ``module`` that has the switch (synthesis blocks, the
    discriminators); returns how many.  Same numbers (tested); cuDNN's tensor-core kernels want NHWC and
    otherwise transpose around each conv."""
    n = 0
    for m in module.modules():
        if hasattr(m, "channels_last"):
            m.channels_last = bool(on)
            n += 1
    return n


def _fold_filter(w, f):
    """Full 2-D convolution of every kernel w[o, i] with the FIR filter f: one conv then does both."""
    O, I, kh, kw = w.shape
    f = _as2d(f)
    fh, fw = f.shape
    wf = F.conv2d(w.reshape(O * I, 1, kh, kw), f.flip([0, 1]).to(w.dtype)[None, None], padding=(fh - 1, fw - 1))
    return wf.reshape(O, I, kh + fh - 1, kw + fw - 1)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, fold_filter=True):
    """conv2d with optional FIR up (transposed conv + filter) or down (filter + strided conv).

    ``fold_filter``: merge the FIR filter into the conv kernel (a 3x3 kernel and a 4x4
    filter become one 6x6 kernel): exactly the same result with a single dense conv,
    which tensor cores run faster than a separate per-channel filter pass, and
    whose second derivative (R1) stays a plain conv.
    """
    out_c, in_c_g, kh, kw = w.shape
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up and down together are not supported")
    px0 = px1 = py0 = py1 = padding
    if up == 1 and down == 1:
        return conv2d(x, w, padding=padding, groups=groups)
    fh, fw = _fsize(f)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    else:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    if down > 1:
        fold = fold_filter and FOLD["down_1x1" if kw == kh == 1 else "down"]
        if fold and px0 == px1 == py0 == py1 and px0 >= 0:
            # correlation with flip(f) then with w == correlation with conv_full(w, f)
            wf = F.conv2d(w.reshape(-1, 1, kh, kw), _as2d(f).to(w.dtype)[None, None], padding=(fh - 1, fw - 1))
            return conv2d(x, wf.reshape(out_c, in_c_g, kh + fh - 1, kw + fw - 1), stride=down, padding=px0,
                          groups=groups)
        if kw == 1 and kh == 1:  # decimate first: 1x1 conv at low resolution
            x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
            return conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return conv2d(x, w, stride=down, groups=groups)
    if kw == 1 and kh == 1:  # 1x1 conv at low resolution, then upsample
        x = conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    # transposed conv (up-sampled conv at low-resolution cost), then the FIR filter
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    sx, sy = fw - 1 - (px0 + pxt), fh - 1 - (py0 + pyt)
    fold = fold_filter and FOLD["up"] and pxt == 0 and pyt == 0 and px0 == px1 and py0 == py1 and sx >= 0 and sy >= 0
    if fold:  # transposed conv with kernel conv_full(w, f): the filtered output, cropped by padding
        w = _fold_filter(w, _as2d(f) * (up * up))
        kh, kw = w.shape[2:]
    if groups == 1:
        w = w.transpose(0, 1)
    else:
        w = w.reshape(groups, out_c // groups, in_c_g, kh, kw).transpose(1, 2)
        w = w.reshape(groups * in_c_g, out_c // groups, kh, kw)
    if fold:
        return channels_last_grad(F.conv_transpose2d(x, w, stride=up, padding=[sy, sx], groups=groups))
    x = channels_last_grad(F.conv_transpose2d(x, w, stride=up, padding=[pyt, pxt], groups=groups))
    return upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, fused_modconv=True):
    """StyleGAN2 modulated convolution.

    x [B,I,H,W], weight [O,I,k,k], styles [B,I], noise broadcastable to the output.
    ``fused_modconv``: one grouped conv with per-sample weights; otherwise the
    activations are scaled by the styles before and the demodulation after one
    shared conv (mathematically identical, dense-conv fast for large batches).
    """
    B = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    styles = styles.float()
    dcoefs = None
    if demodulate:  # 1 / ||w * s|| per (sample, output channel), without materialising w * s
        wsq = weight.float().square().sum(dim=[2, 3])  # [O, I]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [B, O]
    if not fused_modconv:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    w = weight.float()[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    x = x.reshape(1, B * in_c, *x.shape[2:])
    w = w.reshape(B * out_c, in_c, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=B)
    x = x.reshape(B, out_c, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# ----------------------------------------------------------------------------
# equalised-learning-rate layers


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0,
                 bias_init=0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        # weights stored at N(0, 1/lr^2) and scaled at run time: equalised learning rate
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)) / lr_multiplier) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None and x.ndim == 2:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, dim=x.ndim - 1, act=self.activation)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, lr_multiplier=1.0):
        super().__init__()
        self.in_channels, self.out_channels, self.activation = in_channels, out_channels, activation
        self.up, self.down, self.conv_clamp = up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = lr_multiplier / math.sqrt(in_channels * kernel_size ** 2)
        self.bias_gain = lr_multiplier
        self.act_gain = ACTIVATIONS[activation][1]
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding)
        b = self.bias * self.bias_gain if self.bias is not None else None
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
                f"up={self.up}, down={self.down}")


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and optional conditioning c) -> w, broadcast to ``num_ws`` copies."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998,
                 embed_features=None, layer_features=None, activation="lrelu"):
        super().__init__()
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        self.embed = FullyConnectedLayer(c_dim, embed_features) if c_dim > 0 else None
        self.layers = nn.ModuleList(
            FullyConnectedLayer(features[i], features[i + 1], activation=activation, lr_multiplier=lr_multiplier)
            for i in range(num_layers))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.float())
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.float()))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for layer in self.layers:
            x = layer(x)
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi),
                               x[:, truncation_cutoff:]], dim=1)
        return x


# ----------------------------------------------------------------------------
# synthesis


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.up, self.use_noise, self.activation, self.conv_clamp = up, use_noise, activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation][1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=x.dtype) * self.noise_strength.to(x.dtype)
        elif self.use_noise and noise_mode == "const":
            noise = (self.noise_const * self.noise_strength).to(x.dtype)
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}")


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, padding=self.padding,
                             fused_modconv=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """Two modulated 3x3 convs at ``resolution`` (the first upsamples by ``up``) and a skip toRGB.

    ``in_channels == 0`` starts from a learned constant.  ``mid(x, resolution)``, when
    given, edits the activations between the two convs (image conditioning hooks).
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last=False, up=2,
                 resample_filter=(1, 3, 3, 1), conv_clamp=256, use_noise=True, channels_last=False):
        super().__init__()
        self.channels_last = channels_last  # NHWC activations: cuDNN's tensor-core layout, no transposes
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.img_channels, self.is_last, self.up = img_channels, is_last, up
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=up, use_noise=use_noise,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise,
                                    conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(self, x, img, ws, mid=None, noise_mode="random", fused_modconv=None):
        """ws [B, num_conv + num_torgb, w_dim]; returns (x, img)."""
        B = ws.shape[0]
        if fused_modconv is None:  # grouped conv only pays off for a single sample
            fused_modconv = B == 1
        w = ws.unbind(1)
        i = 0
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(B, -1, -1, -1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        else:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv0(x, w[i], noise_mode=noise_mode, fused_modconv=fused_modconv)
            i += 1
        if mid is not None:
            x = mid(x, self.resolution)
        x = self.conv1(x, w[i], noise_mode=noise_mode, fused_modconv=fused_modconv)
        i += 1
        if img is not None and self.up > 1:
            img = upsample2d(img, self.resample_filter, up=self.up)
        y = self.torgb(x, w[i], fused_modconv=fused_modconv)
        img = y if img is None else img + y.to(img.dtype)
        return x, img


def channels_at(resolution, channel_base=32768, channel_max=512):
    return min(channel_base // resolution, channel_max)


class SynthesisNetwork(nn.Module):
    """Constant 4x4 -> blocks doubling to ``img_resolution``, skip architecture."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, conv_clamp=256,
                 use_noise=True, channels_last=False):
        super().__init__()
        log2 = int(round(math.log2(img_resolution)))
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise ValueError(f"SynthesisNetwork: img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        self.channels = {r: channels_at(r, channel_base, channel_max) for r in self.block_resolutions}
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(self.channels[r // 2] if r > 4 else 0, self.channels[r], w_dim, r, img_channels,
                                   is_last=r == img_resolution, conv_clamp=conv_clamp, use_noise=use_noise,
                                   channels_last=channels_last)
            self.blocks.append(block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's toRGB

    def split_ws(self, ws):
        out, idx = [], 0
        for block in self.blocks:  # consecutive blocks share a w: toRGB of r uses conv0 of 2r's w
            out.append(ws.narrow(1, idx, block.num_conv + block.num_torgb))
            idx += block.num_conv
        return out

    def forward(self, ws, mid=None, noise_mode="random", fused_modconv=None):
        x = img = None
        for block, block_ws in zip(self.blocks, self.split_ws(ws)):
            x, img = block(x, img, block_ws, mid=mid, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return img


# ----------------------------------------------------------------------------
# image-conditioned triplane backbone (PAniC-3D)


def cross_average(x, fraction=1 / 8):
    """Replace the first ``fraction`` of channels by their row means (constant along W)
    and the next ``fraction`` by their column means (constant along H), so a
    front-view feature spreads along the plane axes shared with the other planes."""
    n = int(x.shape[1] * fraction)
    if n == 0:
        return x
    rows = x[:, :n].mean(dim=3, keepdim=True).expand(-1, -1, -1, x.shape[3])
    cols = x[:, n:2 * n].mean(dim=2, keepdim=True).expand(-1, -1, x.shape[2], -1)
    return torch.cat([rows, cols, x[:, 2 * n:]], dim=1).contiguous(memory_format=memory_format_of(x))


class CrossAverage(nn.Module):
    def __init__(self, fraction=1 / 8):
        super().__init__()
        self.fraction = fraction

    def forward(self, x):
        return cross_average(x, self.fraction)


class ImageInjection(nn.Module):
    """Add a projection of the (resized) condition image to the activations, then cross-average."""

    def __init__(self, image_channels, channels, cross=True, fraction=1 / 8, conv_clamp=256):
        super().__init__()
        self.proj = Conv2dLayer(image_channels, channels, kernel_size=3, activation="lrelu", conv_clamp=conv_clamp)
        self.cross = CrossAverage(fraction) if cross else nn.Identity()

    def forward(self, x, image):
        # the image in x's layout: a channels-last x keeps its layout (and its gradients) through the add
        return self.cross(x + self.proj(image.to(dtype=x.dtype, memory_format=memory_format_of(x))))


def resize_image(x, size):
    """Area average when shrinking (exact box filter for integer ratios), bilinear when growing."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if size < x.shape[-1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class TriplaneBackbone(nn.Module):
    """Mapping + synthesis producing triplanes, conditioned on a front image.

    forward(z, cond_image, enc_feat, c) -> (planes [B, n_planes, plane_layers*plane_channels, R, R], ws).
    Encoder features are added to the first ``enc_channels`` activations at
    ``enc_resolution``; the condition image is injected (projected, added,
    cross-averaged) at each of ``inject_image_resolutions``.
    """

    def __init__(self, z_dim=512, w_dim=512, c_dim=0, mapping_layers=2, plane_resolution=256, plane_channels=32,
                 n_planes=3, plane_layers=1, channel_base=32768, channel_max=512, cond_resolution=256,
                 enc_channels=512, enc_resolution=8, inject_image_resolutions=(16, 32, 64, 128, 256),
                 cross_average=True, cross_fraction=1 / 8, image_channels=3, conv_clamp=256, lr_multiplier=0.01,
                 use_noise=True, channels_last=False):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.plane_resolution, self.plane_channels = plane_resolution, plane_channels
        self.n_planes, self.plane_layers = n_planes, plane_layers
        self.cond_resolution, self.enc_channels, self.enc_resolution = cond_resolution, enc_channels, enc_resolution
        self.inject_image_resolutions = tuple(int(r) for r in inject_image_resolutions)
        self.synthesis = SynthesisNetwork(w_dim, plane_resolution, n_planes * plane_layers * plane_channels,
                                          channel_base=channel_base, channel_max=channel_max,
                                          conv_clamp=conv_clamp, use_noise=use_noise, channels_last=channels_last)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=lr_multiplier)
        chans = self.synthesis.channels
        if enc_channels:
            if enc_resolution not in chans:
                raise ValueError(f"TriplaneBackbone: enc_resolution {enc_resolution} is not a synthesis resolution")
            if enc_channels > chans[enc_resolution]:
                raise ValueError(f"TriplaneBackbone: enc_channels {enc_channels} > {chans[enc_resolution]} "
                                 f"synthesis channels at {enc_resolution}x{enc_resolution}")
        for r in self.inject_image_resolutions:
            if r not in chans:
                raise ValueError(f"TriplaneBackbone: injection resolution {r} is not a synthesis resolution")
        self.injectors = nn.ModuleDict({
            str(r): ImageInjection(image_channels, chans[r], cross=cross_average, fraction=cross_fraction,
                                   conv_clamp=conv_clamp)
            for r in self.inject_image_resolutions})

    def _mid(self, cond, enc_feat, x, resolution):
        if enc_feat is not None and resolution == self.enc_resolution:
            e = enc_feat.to(x.dtype)
            if e.shape[-1] != resolution:
                e = F.interpolate(e, size=(resolution, resolution), mode="bilinear", align_corners=False)
            x = x + F.pad(e, [0, 0, 0, 0, 0, x.shape[1] - e.shape[1]]).contiguous(memory_format=memory_format_of(x))
        if cond is not None and resolution in self.inject_image_resolutions:
            x = self.injectors[str(resolution)](x, resize_image(cond, resolution))
        return x

    def synthesize(self, ws, cond_image=None, enc_feat=None, noise_mode="random", fused_modconv=None):
        if enc_feat is not None and enc_feat.shape[1] != self.enc_channels:
            raise ValueError(f"TriplaneBackbone: enc_feat has {enc_feat.shape[1]} channels, "
                             f"expected {self.enc_channels}")
        mid = None
        if cond_image is not None or enc_feat is not None:
            mid = functools.partial(self._mid, cond_image, enc_feat)
        img = self.synthesis(ws, mid=mid, noise_mode=noise_mode, fused_modconv=fused_modconv)
        if self.synthesis.blocks[-1].channels_last:     # NHWC planes: a texel's channels are one row for the lookup
            img = img.contiguous(memory_format=torch.channels_last)
        R = self.plane_resolution
        return img.reshape(img.shape[0], self.n_planes, self.plane_layers * self.plane_channels, R, R)

    def forward(self, z, cond_image=None, enc_feat=None, c=None, truncation_psi=1, truncation_cutoff=None,
                noise_mode="random", fused_modconv=None, update_emas=False):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        planes = self.synthesize(ws, cond_image, enc_feat, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return planes, ws
