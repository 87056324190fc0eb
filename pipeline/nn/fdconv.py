"""Frequency Dynamic Convolution (FDConv), a drop-in replacement for ``nn.Conv2d``.

The layer of Chen et al., "Frequency Dynamic Convolution for Dense Image Prediction", CVPR 2025
(arXiv 2503.18783): a dynamic convolution whose per-sample kernel is assembled from disjoint groups
of Fourier coefficients of one weight tensor. The math it relies on, in the terms of this module
(section numbers are referred to below and in the tests):

Notation. Input ``x``: ``(B, Cin, H, W)``; static kernel ``W``: ``(Cout, Cin, k, k)``, groups 1;
``s = min(Cout, Cin) // 2``; ``n = kernel_num``; ``r = param_ratio``. ``M`` is the kernel as a
``(Cout*k, Cin*k)`` matrix, ``M[o*k + i, c*k + j] = W[o, c, i, j]``; ``rfft2``/``irfft2`` are 2-D
real FFTs over both axes (backward norm).

1. Fourier Disjoint Weight (FDW). The parameter ``D = rfft2(M) / s`` (``dft_weight``, real and
   imaginary parts in the last axis, ``r`` copies). The cells ``(u, v)`` of the rfft2 grid are sorted
   by radius ``sqrt(fftfreq(Cout*k)[u]^2 + rfftfreq(Cin*k)[v]^2)`` (stable, ties by flat index) and
   split into ``n`` contiguous groups ``G_1..G_n`` (low to high frequency) whose sizes differ by at
   most one, so every channel count works. With ``alpha = s * n * r / param_reduction`` and the
   kernel attention ``a[b, g]``, sample ``b``'s kernel is
   ``M_b = irfft2(sum_g a[b, g] * alpha * (D masked to G_g)) = sum_g a[b, g] * B_g``: irfft2 is
   linear, so the basis kernels ``B_g = irfft2(alpha * D masked to G_g)`` depend on parameters only.
2. Kernel Spatial Modulation (KSM). Both branches read ``p = mean_{H,W}(x)``. Global branch:
   ``h = StarReLU(LayerNorm(FC(p)))`` (hidden width ``max(int(Cin * reduction), 16)``,
   ``StarReLU(z) = scale * relu(z)^2 + bias``), then four linear heads: channel
   ``ca = sigmoid(z_c / T) * att_multi`` ``(B, Cin)``, filter ``fa`` ``(B, Cout)``, spatial ``sa``
   ``(B, k, k)`` (absent for k = 1) and kernel ``a = sigmoid(z_k / Tk) * 2 / (r*n)`` ``(B, r*n)``
   (absent for ``r*n = 1``); ``1 + tanh(z / T)`` and, for the kernel head, ``softmax(z / Tk)`` are the
   alternative activations. Temperatures: ``Tk = kernel_temp = 1.0`` and ``T = temp = Tk`` by
   default, as in the paper's code for ``kernel_num`` given. Local branch: a 1-D zero-padded
   convolution along the channel axis of ``LayerNorm(p)`` with ``Cout*k*k`` outputs and odd size
   ``ks = round(log2(Cin) / 2 + 0.5) // 2 * 2 + 1`` gives logits ``l[b, o, c, i, j]`` and
   ``la = sigmoid(l) * att_multi`` (or ``1 + tanh(l)``), one factor per kernel element.
   LayerNorm (not the paper's BatchNorm) normalises the hidden features: it works per sample, so
   training at batch size 1 works and train and eval mode compute the same function.
3. Frequency Band Modulation (FBM), for k = 3 (``use_fbm_if_k_in``), factors ``k_list = (2, 4, 8)``.
   The low-pass ``L_f(x) = irfft2(rfft2(x, ortho) * m_f, ortho)`` keeps, along an axis of length
   ``N``, the frequencies with signed index ``q`` where ``2 * f * |q| < N`` (decided in integers, for
   the actual ``H, W``; the mask is the product of both axes' masks). With ``prev = x``, ``out = 0``,
   for each ``f``: ``low = L_f(x)``, ``out += 2 * sigmoid(conv_f(x)) * (prev - low)``, ``prev = low``;
   finally ``out += prev``. ``conv_f`` is a 3x3 convolution ``Cin -> fbm_spatial_group`` maps, each
   scaling its share of the channels. The separable mask makes ``L_f(x) = U_f U_f^T x V_f V_f^T``
   with real orthonormal Fourier bases (DC, then cos/sin pairs by rising ``|q|``), in which every
   narrower band is a prefix of the widest one: one projection serves all bands, no FFT needed.
4. The layer. ``y_b = conv2d(FBM(x_b), W~_b) + bias`` with
   ``W~_b[o, c, i, j] = sa[b, i, j] * ca[b, c] * fa[b, o] * M_b[o, c, i, j] * la[b, o, c, i, j]``;
   scaling the input by ``ca`` instead of the kernel is the same function. FDConv applies where
   ``min(Cin, Cout) > use_fdconv_if_c_gt`` (16), ``k`` is in ``use_fdconv_if_k_in`` (1, 3), the kernel
   is square and ``groups == 1``; elsewhere the layer is a plain convolution with an ordinary
   ``weight`` (:attr:`FDConv.is_dynamic` says which).
5. The invariant. All attention heads, the local convolution and the FBM convolutions start at
   (near) zero weights, so at initialisation every attention is neutral (``sigmoid(0) * att_multi
   = 1`` with the default ``att_multi = 2``, so ``ca = fa = sa = la = 1``; ``a = 1/(r*n)``), every
   band map is 1 and ``FBM(x) = x``; then ``sum_g a * alpha * D = s * D = rfft2(M)`` and
   ``M_b = M``, whatever the temperatures: :meth:`FDConv.from_conv` gives an FDConv computing the
   function of the ``Conv2d`` it was built from (up to float rounding), which is what turns a
   pretrained stock checkpoint into an FDConv model with unchanged outputs.

Numerics: FFTs always run in float32 with autocast disabled (half-precision cuFFT accepts only
power-of-two sizes; CPU FFTs reject bfloat16).

The fast paths, in the order a forward runs them:

* Basis kernels: all ``r * n`` of them by one batched ``irfft2``, once per forward in training
  (shared by the batch) and cached in inference; the cache key is the parameter's storage pointer
  and version counter, so optimizer steps, ``load_state_dict`` and ``.to()`` invalidate it.
* Kernel assembly: ``(alpha * a) @ B`` (one GEMM for the whole batch), times the local attention
  and one small ``fa * sa`` factor, and ``ca`` on whichever side is cheaper (section 4); in training
  a hand-written backward keeps the number of full-size temporaries low.
* Convolution: one grouped convolution with ``groups = B`` for all per-sample kernels.
* FBM: low-passes as separable projections (a few GEMMs) up to ``FBM_FFT_MIN_SIZE``, masked FFTs
  above. Inference (no autograd) works in an ``(H, W, B*Cin)``
  layout instead, where every product is one GEMM or one broadcast batch of them with no
  transposed copies: ``ca`` is folded into the one copy of the input into that layout (none for a
  channels-last batch of 1), the bands are accumulated in place through one reused low-pass
  buffer, and the grouped convolution reads the result as a channels-last tensor. (With autograd
  that layout is slower: training keeps the NCHW form.) The output has the input's memory format.

Export (ONNX export or TorchScript tracing) records a graph with no FFT and a symbolic batch axis:
the FBM low-passes are always projections; the basis kernels are rebuilt from ``D`` by real
DFT-matrix products that ONNX Runtime and OpenVINO fold once at load (:meth:`FDConv._graph_basis`),
so a file stores ``D`` (about one static kernel) instead of ``r * n`` basis kernels; and the
per-sample kernels are applied by :func:`batched_conv` (batched matrix products over the shifted
views of the input, ``EXPORT_CONV_FORM``), since an ONNX ``Conv``'s group count cannot follow the
batch. One exported graph therefore runs every batch size as one batched operation, without ``Loop``.

Allocator note: above glibc's 32 MB mmap threshold every freshly allocated tensor is page-faulted
in again, which makes training steps of wide layers at large batches (e.g. 256 channels at batch
16, whose per-sample kernels take 38 MB) up to ~1.6x slower; ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` (or jemalloc / tcmalloc) remove that cost.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FDConv", "StarReLU", "batched_conv", "frequency_groups", "band_keep", "real_fourier_basis"]

_GLOBAL_ACTS = ("sigmoid", "tanh", "softmax")
_LOCAL_ACTS = ("sigmoid", "tanh")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def frequency_groups(rows: int, cols: int, kernel_num: int, cells: np.ndarray | None = None) -> np.ndarray:
    """Group index (0 = lowest frequencies) for cells of the ``rfft2`` grid of a ``rows x cols`` matrix.

    ``cells`` selects flat indices into the ``(rows, cols // 2 + 1)`` grid (all cells when None).
    The cells are sorted by radius ``sqrt(fftfreq(rows)^2 + rfftfreq(cols)^2)`` with a stable sort
    (ties by flat index) and split into ``kernel_num`` contiguous groups whose sizes differ by at most
    one (the larger groups first). Returns one group index per selected cell, in ``cells`` order.
    Radii are compared exactly, as the integers ``(q_u * cols)^2 + (q_v * rows)^2`` (the squared
    radius times ``(rows * cols)^2``), so equal radii are ties even where float rounding differs.
    """
    u = np.arange(rows, dtype=np.int64)
    qu = np.where(u <= (rows - 1) // 2, u, u - rows)
    qv = np.arange(cols // 2 + 1, dtype=np.int64)
    radius = ((qu[:, None] * cols) ** 2 + (qv[None, :] * rows) ** 2).reshape(-1)
    if cells is None:
        cells = np.arange(radius.size)
    order = np.argsort(radius[cells], kind="stable")
    count = len(cells)
    base, extra = divmod(count, kernel_num)
    sizes = np.array([base + (1 if g < extra else 0) for g in range(kernel_num)])
    group_of_rank = np.repeat(np.arange(kernel_num), sizes)
    groups = np.empty(count, dtype=np.int64)
    groups[order] = group_of_rank
    return groups


def band_keep(n: int, f: int) -> np.ndarray:
    """Which ``fftfreq(n)`` indices the FBM low-pass for factor ``f`` keeps: ``2 * f * |q| < n``.

    Decided in integers (the signed index ``q`` of index ``u`` is ``u`` or ``u - n``), so the
    boundary frequency is never kept or dropped by float rounding.
    """
    u = np.arange(n)
    q = np.where(u <= (n - 1) // 2, u, u - n)
    return 2 * f * np.abs(q) < n


def real_fourier_basis(n: int, f: int) -> np.ndarray:
    """Orthonormal real basis ``(n, 1 + 2 * qmax)`` of the frequencies ``|q| <= qmax`` kept for ``f``.

    Columns: DC, then ``cos``/``sin`` pairs by rising ``|q|``, so the basis of a narrower band is a
    prefix of a wider band's basis (section 3). ``qmax = (n - 1) // (2 f)`` is the largest ``q``
    with ``2 f q < n``; it is always below ``n / 2``, so no Nyquist column is ever needed.
    """
    qmax = (n - 1) // (2 * f)
    t = np.arange(n, dtype=np.float64)
    columns = [np.full(n, 1.0 / math.sqrt(n))]
    for q in range(1, qmax + 1):
        angle = 2.0 * math.pi * q * t / n
        columns.append(np.cos(angle) * math.sqrt(2.0 / n))
        columns.append(np.sin(angle) * math.sqrt(2.0 / n))
    return np.stack(columns, axis=1)


class StarReLU(nn.Module):
    """``scale * relu(x) ** 2 + bias`` with learnable scalars (``scale = 1``, ``bias = 0`` at init)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, self.scale, F.relu(x).square())


# FBM low-passes use separable projections below this map size and FFTs from it on. Measured on
# one CPU thread (32 channels, three bands): projections take 1.2 / 3.3 / 7.5 / 11.7 ms at
# 80 / 120 / 160 / 240 px where the FFTs take 2.2 / 4.9 / 14.3 / 13.1 ms; at 320 px FFTs win.
FBM_FFT_MIN_SIZE = 288


# How an export applies the per-sample kernels (see :func:`batched_conv`): "im2col" or "taps".
EXPORT_CONV_FORM = "im2col"


def _as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)`` without a dispatcher call when it already is (most calls, per forward)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _exporting() -> bool:
    """True while ONNX export or TorchScript tracing records the graph (no FFT allowed there)."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


@contextlib.contextmanager
def _cache_context():
    """Compute cached, parameter-derived constants: no autograd, no trace, no inference tensors.

    Inside ``torch.onnx.export`` / ``torch.jit.trace`` the caches (basis kernels, FBM projections)
    must enter the graph as constants; recording their computation would put the FFTs (which the
    TorchScript ONNX exporter cannot export) back into the graph. And a cache first built under
    ``torch.inference_mode`` (ultralytics validates that way between training epochs) must still be
    usable by autograd afterwards, so it is built as a normal tensor.
    """
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        with torch.inference_mode(False), torch.no_grad():
            yield
    finally:
        torch._C._set_tracing_state(state)


def _check_options(in_channels: int, out_channels: int, groups: int, kernel_num: int, param_ratio: int,
                   param_reduction: float, ksm_global_act: str, ksm_local_act: str) -> None:
    """Reject constructor arguments FDConv cannot work with (``ValueError``, like ``nn.Conv2d``)."""
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must divide by "
                         f"groups {groups}")
    if ksm_global_act not in _GLOBAL_ACTS:
        raise ValueError(f"ksm_global_act must be one of {_GLOBAL_ACTS}, got {ksm_global_act!r}")
    if ksm_local_act not in _LOCAL_ACTS:
        raise ValueError(f"ksm_local_act must be one of {_LOCAL_ACTS}, got {ksm_local_act!r}")
    if kernel_num < 1 or param_ratio < 1 or not 0.0 < param_reduction <= 1.0:
        raise ValueError("kernel_num and param_ratio must be >= 1 and 0 < param_reduction <= 1")


class FDConv(nn.Module):
    """Frequency Dynamic Convolution with the constructor of ``nn.Conv2d`` (see the module docstring).

    Args beyond ``nn.Conv2d``'s: ``kernel_num`` (frequency groups ``n``), ``reduction`` (KSM hidden
    width factor, at least 16 wide), ``att_multi`` (scale of sigmoid attentions), ``param_ratio``
    (``r`` copies of ``D``), ``param_reduction`` (fraction of frequency cells kept as parameters;
    below 1 the layer no longer starts as its source conv), ``use_fdconv_if_c_gt``,
    ``use_fdconv_if_k_in``, ``use_fbm_if_k_in``, ``k_list`` (FBM low-pass factors),
    ``kernel_temp`` (kernel-attention temperature, default 1.0) and ``temp`` (temperature of the
    other attentions, default ``kernel_temp``), ``ksm_global_act`` (``sigmoid``, ``tanh``, or
    ``softmax`` for the kernel head), ``ksm_local_act`` (``sigmoid`` or ``tanh``) and
    ``fbm_spatial_group`` (band maps per FBM band, each scaling its share of channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        kernel_num: int = 16,
        reduction: float = 0.0625,
        att_multi: float = 2.0,
        param_ratio: int = 1,
        param_reduction: float = 1.0,
        use_fdconv_if_c_gt: int = 16,
        use_fdconv_if_k_in: Sequence[int] = (1, 3),
        use_fbm_if_k_in: Sequence[int] = (3,),
        k_list: Sequence[int] = (2, 4, 8),
        kernel_temp: float = 1.0,
        temp: float | None = None,
        ksm_global_act: str = "sigmoid",
        ksm_local_act: str = "sigmoid",
        fbm_spatial_group: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_options(in_channels, out_channels, groups, kernel_num, param_ratio, param_reduction,
                       ksm_global_act, ksm_local_act)
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.kernel_num = kernel_num
        self.param_ratio = param_ratio
        self.param_reduction = param_reduction
        self.att_multi = float(att_multi)
        self.ksm_global_act = ksm_global_act
        self.ksm_local_act = ksm_local_act
        self.is_dynamic = (
            min(in_channels, out_channels) > use_fdconv_if_c_gt
            and self.kernel_size[0] == self.kernel_size[1]
            and self.kernel_size[0] in tuple(use_fdconv_if_k_in)
            and groups == 1
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._basis_cache: torch.Tensor | None = None
        self._basis_key: tuple | None = None
        self._projection_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if not self.is_dynamic:
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size,
                                                   **factory))
        else:
            self.kernel_temp = float(kernel_temp)
            self.temp = float(temp) if temp is not None else self.kernel_temp
            self._init_fdw(factory)
            self._init_ksm(reduction, factory)
            self._init_fbm(use_fbm_if_k_in, k_list, fbm_spatial_group, factory)
        self.reset_parameters()

    def _init_fdw(self, factory: dict) -> None:
        """FDW (section 1): ``D`` over the rfft2 grid of the ``(Cout*k, Cin*k)`` kernel matrix."""
        cin, cout, k = self.in_channels, self.out_channels, self.kernel_size[0]
        r, n = self.param_ratio, self.kernel_num
        self.s = min(cin, cout) // 2
        self.alpha = self.s * n * r / self.param_reduction
        rows, cols = cout * k, cin * k
        grid = rows * (cols // 2 + 1)
        if self.param_reduction < 1.0:
            # A fixed, size-seeded random subset of cells is kept (stored compactly as (r, K, 2)).
            generator = torch.Generator().manual_seed(grid)
            kept = torch.randperm(grid, generator=generator)[: int(grid * self.param_reduction)]
            cells = np.sort(kept.numpy())
            self.dft_weight = nn.Parameter(torch.empty(r, len(cells), 2, **factory))
        else:
            cells = np.arange(grid)
            self.dft_weight = nn.Parameter(torch.empty(r, rows, cols // 2 + 1, 2, **factory))
        group = frequency_groups(rows, cols, n, cells)
        # Position of each stored cell in the (kernel_num * grid) stack of per-group spectra.
        target = torch.from_numpy(group * grid + cells)
        self.register_buffer("_fdw_target", target.to(factory["device"]), persistent=False)
        if self.param_reduction == 1.0 and n <= 127:
            # For the export's in-graph basis (:meth:`_graph_basis`): each cell's group, one byte a cell.
            self.register_buffer("_fdw_group", torch.from_numpy(group.reshape(rows, -1).astype(np.int8))
                                 .to(factory["device"]), persistent=False)

    def _init_ksm(self, reduction: float, factory: dict) -> None:
        """KSM (section 2): the global branch's MLP and fused heads, the local branch's 1-D conv."""
        cin, cout, k = self.in_channels, self.out_channels, self.kernel_size[0]
        groups_total = self.kernel_num * self.param_ratio
        hidden = max(int(cin * reduction), 16)
        self.ksm_fc = nn.Linear(cin, hidden, bias=False, **factory)
        self.ksm_norm = nn.LayerNorm(hidden, **factory)
        self.ksm_act = StarReLU().to(factory["device"])
        # The four heads as one Linear, output rows [channel | filter | spatial | kernel]; the
        # spatial head is absent for k = 1 and the kernel head for r * n = 1 (size 0).
        self.head_sizes = (cin, cout, k * k if k > 1 else 0, groups_total if groups_total > 1 else 0)
        self.ksm_heads = nn.Linear(hidden, sum(self.head_sizes), **factory)
        # Scale of the channel/filter/spatial attentions: att_multi for sigmoid, 1 for 1 + tanh; the
        # filter columns also carry the local attention's att_multi (both scale the same kernel).
        scale = torch.full((cin + cout + self.head_sizes[2],),
                           1.0 if self.ksm_global_act == "tanh" else self.att_multi)
        if self.ksm_local_act == "sigmoid":
            scale[cin:cin + cout] *= self.att_multi
        self.register_buffer("_att_scale", scale.to(factory["device"]), persistent=False)

        ks = round(math.log2(cin) / 2 + 0.5) // 2 * 2 + 1
        self.local_norm = nn.LayerNorm(cin, **factory)
        self.local_conv = nn.Conv1d(1, cout * k * k, ks, padding=(ks - 1) // 2, bias=False, **factory)

    def _init_fbm(self, use_fbm_if_k_in: Sequence[int], k_list: Sequence[int], spatial_group: int,
                  factory: dict) -> None:
        """FBM (section 3): the band convolutions and the matrix that mixes band maps into coefficients."""
        cin = self.in_channels
        self.k_list = tuple(int(f) for f in k_list)
        self.fbm_spatial_group = spatial_group
        if self.kernel_size[0] not in tuple(use_fbm_if_k_in) or not self.k_list:
            self.fbm_conv = None
            return
        if cin % spatial_group:
            raise ValueError(f"in_channels {cin} must divide by fbm_spatial_group {spatial_group}")
        bands = len(self.k_list)
        self.fbm_conv = nn.Conv2d(cin, bands * spatial_group, 3, padding=1, **factory)
        # Band maps m_j = 2 * sigmoid(conv_j(x)) -> coefficient maps [m_1, m_2 - m_1, ..., 1 - m_last]
        # as one (bands + 1, bands) matrix times the sigmoids, plus an offset.
        mix = torch.zeros(bands + 1, bands)
        mix[0, 0] = 2.0
        for j in range(bands):
            mix[j + 1, j] = -2.0
            if j + 1 < bands:
                mix[j + 1, j + 1] = 2.0
        offset = torch.zeros(bands + 1, 1)
        offset[bands] = 1.0
        self.register_buffer("_band_mix", mix.to(factory["device"]), persistent=False)
        self.register_buffer("_band_offset", offset.to(factory["device"]), persistent=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options) -> FDConv:
        """An FDConv computing the same function as ``conv`` (weight and bias copied; section 5)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv needs an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"from_conv supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
                    **options)
        with torch.no_grad():
            layer.load_conv_weight(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    @torch.no_grad()
    def load_conv_weight(self, weight: torch.Tensor) -> None:
        """Set the static kernel from a ``Conv2d``-shaped weight (``D = rfft2(M) / s`` when dynamic)."""
        if not self.is_dynamic:
            self.weight.copy_(weight)
            return
        cout, cin, k, _ = weight.shape
        matrix = weight.detach().float().permute(0, 2, 1, 3).reshape(cout * k, cin * k)
        spectrum = torch.view_as_real(torch.fft.rfft2(matrix)) / self.s
        # With r copies each copy carries 1/r, so the sum over copies is still rfft2(M) / s (section 5).
        spectrum = spectrum / self.param_ratio
        if self.param_reduction < 1.0:
            cells = self._fdw_target % spectrum[..., 0].numel()
            spectrum = spectrum.reshape(-1, 2)[cells]
        self.dft_weight.copy_(spectrum.expand_as(self.dft_weight))

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Conv2d`` for the kernel and bias; attentions start neutral (section 2)."""
        reference = self.dft_weight if self.is_dynamic else self.weight
        weight = torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size,
                             device=reference.device, dtype=reference.dtype)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        fan_in = weight[0].numel()
        with torch.no_grad():
            if self.is_dynamic:
                self.load_conv_weight(weight)
            else:
                self.weight.copy_(weight)
            if self.bias is not None:
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(self.bias, -bound, bound)
        if not self.is_dynamic:
            return
        nn.init.kaiming_normal_(self.ksm_fc.weight, mode="fan_out", nonlinearity="relu")
        self.ksm_norm.reset_parameters()
        nn.init.ones_(self.ksm_act.scale)
        nn.init.zeros_(self.ksm_act.bias)
        nn.init.normal_(self.ksm_heads.weight, std=1e-6)
        nn.init.zeros_(self.ksm_heads.bias)
        self.local_norm.reset_parameters()
        nn.init.constant_(self.local_conv.weight, 1e-6)
        if self.fbm_conv is not None:
            nn.init.normal_(self.fbm_conv.weight, std=1e-6)
            nn.init.zeros_(self.fbm_conv.bias)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.is_dynamic:
            text += f", kernel_num={self.kernel_num}, fbm={self.fbm_conv is not None}"
        else:
            text += ", dynamic=False"
        return text

    def __getstate__(self) -> dict:
        # Caches are derived data (and can be large): never pickle them into checkpoints.
        state = self.__dict__.copy()
        state["_basis_cache"] = None
        state["_basis_key"] = None
        state["_projection_cache"] = {}
        return state

    # ------------------------------------------------------------------ FDW

    def _compute_basis(self) -> torch.Tensor:
        """Basis kernels ``B_g / alpha`` as one tensor ``(r * n, Cout, Cin, k*k)``, float32 (section 1).

        ``alpha`` is applied to the kernel attention instead (``(alpha * a) @ B``, a ``(B, r*n)``
        product), which saves two passes over the ``r*n`` full-size kernels per training step.
        """
        cout, cin, k = self.out_channels, self.in_channels, self.kernel_size[0]
        rows, cols = cout * k, cin * k
        grid = rows * (cols // 2 + 1)
        r, n = self.param_ratio, self.kernel_num
        with torch.autocast(self.dft_weight.device.type, enabled=False):
            values = self.dft_weight.float().reshape(r, -1, 2)
            # Scatter each stored cell into its group's spectrum: (r, n * grid, 2), zeros elsewhere.
            stacked = values.new_zeros(r, n * grid, 2)
            stacked.index_copy_(1, self._fdw_target, values)
            spectra = torch.view_as_complex(stacked.reshape(r * n, rows, cols // 2 + 1, 2))
            # One batched inverse FFT for all r * n groups.
            basis = torch.fft.irfft2(spectra, s=(rows, cols))
        # M[o*k + i, c*k + j] -> (group, o, c, i*k + j): the layout the grouped convolution reads.
        return basis.reshape(r * n, cout, k, cin, k).permute(0, 1, 3, 2, 4).reshape(r * n, cout, cin, k * k)

    def _graph_basis(self) -> torch.Tensor:
        """:meth:`_compute_basis` as graph operations an exporter records and a runtime folds at load.

        An exported file then stores ``D`` (about one static kernel's worth) instead of the ``r * n``
        basis kernels, and ONNX Runtime / OpenVINO rebuild the basis once, when they load the model,
        by constant folding. The inverse FFT becomes real DFT-matrix products (exporters have no
        ``irfft2``): along the rows a complex inverse DFT, along the columns the half-spectrum
        inverse with weights 1, 2, ..., 2 (1 at Nyquist), whose sine column at DC and Nyquist
        ignores the imaginary parts as ``irfft`` does. The group masks and the DFT matrices are
        built from ``arange``s matrix-multiplied by a ``(1, 1)`` one derived from a parameter: the
        TorchScript exporter inlines buffers and Python constants and folds every operation on
        them, but it folds no ``MatMul`` over an initializer, so those large products are not
        stored in the file; the runtimes fold everything.
        """
        cout, cin, k = self.out_channels, self.in_channels, self.kernel_size[0]
        rows, cols = cout * k, cin * k
        half = cols // 2 + 1
        r, n = self.param_ratio, self.kernel_num
        # A (1, 1) one the exporter folds from a parameter into an initializer, not into the MatMuls.
        unit = (self.ksm_act.scale.float() * 0.0 + 1.0).reshape(1, 1)

        def indices(count: int) -> torch.Tensor:  # (count, 1): 0 .. count-1, not foldable by the exporter
            return torch.matmul(torch.arange(count, dtype=torch.float32).reshape(count, 1), unit)

        def angles(first: torch.Tensor, second: torch.Tensor, period: int) -> torch.Tensor:
            # (u * x) mod period first: exact in float32 (products below 2**24), so the angle is too.
            return torch.remainder(first * second.t(), period) * (2.0 * math.pi / period)

        masks = self._fdw_group.float() == indices(n).reshape(n, 1, 1)  # (n, rows, half)
        spectra = self.dft_weight.float().reshape(r, 1, rows, half, 2) * masks.float().unsqueeze(-1)
        spectra = spectra.reshape(r * n, rows, half, 2) * (1.0 / (rows * cols))  # backward norm
        # Along the rows: [Yr; Yi] = [[C, -S], [S, C]] @ [Sr; Si].
        row_angle = angles(indices(rows), indices(rows), rows)
        cos, sin = torch.cos(row_angle), torch.sin(row_angle)
        row_dft = torch.cat([torch.cat([cos, -sin], 1), torch.cat([sin, cos], 1)], 0)  # (2 rows, 2 rows)
        stacked = torch.cat([spectra[..., 0], spectra[..., 1]], 1)  # (r*n, 2 rows, half)
        inner = torch.matmul(row_dft, stacked)
        # Along the columns: M = [Yr, Yi] @ [w cos; -w sin].
        col_angle = angles(indices(half), indices(cols), cols)
        weight = torch.full((half, 1), 2.0)
        weight[0] = 1.0
        if cols % 2 == 0:
            weight[-1] = 1.0
        col_dft = torch.cat([torch.cos(col_angle) * weight, torch.sin(col_angle) * -weight], 0)
        joined = torch.cat([inner[:, :rows], inner[:, rows:]], 2)  # (r*n, rows, 2 half)
        basis = torch.matmul(joined, col_dft)  # (r*n, rows, cols)
        return basis.reshape(r * n, cout, k, cin, k).permute(0, 1, 3, 2, 4).reshape(r * n, cout, cin, k * k)

    def _basis(self, cin_last: bool = False) -> torch.Tensor:
        """Basis kernels: recomputed while training (autograd), cached in inference.

        ``(r*n, Cout, Cin, k*k)``, or with ``cin_last`` ``(r*n, Cout, k*k, Cin)``: the order in which
        the kernels they mix are a channels-last weight. The cache holds that order (what
        inference uses); the other is a view of it. The cache key holds the parameter's storage
        pointer and in-place version counter, which optimizer steps, ``load_state_dict`` and
        ``.to()`` all change.
        """
        param = self.dft_weight
        needs_grad = torch.is_grad_enabled() and param.requires_grad
        if self.training or (needs_grad and not _exporting()):
            basis = self._compute_basis()
            return basis.transpose(2, 3).contiguous() if cin_last else basis
        key = (param.data_ptr(), param._version, param.device, param.dtype)
        if self._basis_cache is None or self._basis_key != key:
            with _cache_context():
                self._basis_cache = self._compute_basis().transpose(2, 3).contiguous()
            self._basis_key = key
        return self._basis_cache if cin_last else self._basis_cache.transpose(2, 3)

    # ------------------------------------------------------------------ KSM

    def _global_attentions(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """KSM global branch (section 2) in the forms the forward uses, all float32.

        Returns ``ca`` ``(B, Cin)``; ``factor = fa * sa`` ``(B, Cout, 1, k*k)`` with the local
        attention's ``att_multi`` folded in; the kernel attention times alpha, ``(B, r*n)``.
        """
        batch = pooled.shape[0]
        cin, cout, kk, groups = self.head_sizes
        z = _as(self.ksm_heads(self.ksm_act(self.ksm_norm(self.ksm_fc(pooled)))), torch.float32)
        logits = z[:, :cin + cout + kk]
        if self.temp != 1.0:
            logits = logits / self.temp
        if self.ksm_global_act == "tanh":
            att = (1.0 + torch.tanh(logits)) * self._att_scale
        else:
            att = torch.sigmoid(logits) * self._att_scale
        ca = att[:, :cin]
        factor = att[:, cin:cin + cout].reshape(batch, cout, 1, 1)
        if kk:
            factor = factor * att[:, cin + cout:].reshape(batch, 1, 1, kk)
        if not groups:
            return ca, factor, z.new_full((batch, 1), self.alpha)
        zk = z[:, cin + cout + kk:]
        if self.kernel_temp != 1.0:
            zk = zk / self.kernel_temp
        if self.ksm_global_act == "softmax":
            a = torch.softmax(zk, dim=-1) * self.alpha
        elif self.ksm_global_act == "tanh":
            a = (1.0 + torch.tanh(zk)) * (self.alpha / groups)
        else:
            a = torch.sigmoid(zk) * (2.0 * self.alpha / groups)
        return ca, factor, a

    def _local_taps(self) -> torch.Tensor:
        """The local branch's 1-D convolution weight as ``(Cout, k*k, ks)`` taps (section 2).

        Output channel ``o*k*k + i*k + j`` of that convolution is the logit of kernel element
        ``(o, i, j)``; the convolution itself runs inside the kernel assembly (see
        :func:`_local_logits`), in the ``(B, Cout, Cin, k*k)`` layout of the kernels.
        """
        weight = self.local_conv.weight
        return weight.reshape(self.out_channels, self.kernel_size[0] ** 2, weight.shape[-1])

    # ------------------------------------------------------------------ FBM

    def _projections(self, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The widest band's real Fourier basis for ``size`` and its transpose (both contiguous)."""
        key = (size, device)
        if key not in self._projection_cache:
            basis = real_fourier_basis(size, min(self.k_list))
            with _cache_context():
                forward = torch.from_numpy(basis).to(device=device, dtype=torch.float32)
                self._projection_cache[key] = (forward, forward.t().contiguous())
        return self._projection_cache[key]

    def _low_passes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``L_f(x)`` for every ``f`` in ``k_list`` (float32 ``(B, C, H, W)`` input).

        Large maps use masked FFTs; small maps and every export use :meth:`_projected_low_passes`.
        """
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if max(height, width) < FBM_FFT_MIN_SIZE or _exporting():
            return self._projected_low_passes(x)
        spectrum = torch.fft.rfft2(x, norm="ortho")
        lows = []
        for f in self.k_list:
            rows = torch.from_numpy(band_keep(height, f)).to(x.device)
            cols = torch.from_numpy(band_keep(width, f)[: width // 2 + 1]).to(x.device)
            mask = (rows[:, None] & cols[None, :]).to(x.dtype)
            lows.append(torch.fft.irfft2(spectrum * mask, s=(height, width), norm="ortho"))
        return lows

    def _projected_low_passes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``L_f(x)`` for every ``f`` in ``k_list`` (float32 ``(B, C, H, W)`` input), by projections.

        ``L_f(x) = U_f U_f^T x V_f V_f^T`` with real orthonormal Fourier bases whose narrower bands
        are prefixes of the widest band's basis, so one projection ``C = U^T x V`` serves all bands.
        Every product is one 2-D GEMM over all samples, channels and rows (the small basis matrix on
        the right) rather than many tiny batched ones.
        """
        # Only the static sizes become Python ints: the batch stays symbolic in an exported graph.
        channels, height, width = (int(size) for size in x.shape[1:])
        u, u_t = self._projections(height, x.device)
        v, v_t = self._projections(width, x.device)
        kh_max, kw_max = u.shape[1], v.shape[1]
        rows = torch.mm(x.reshape(-1, width), v)  # x V: (N*H, kW)
        rows = rows.reshape(-1, height, kw_max).transpose(1, 2).reshape(-1, height)
        coeffs_t = torch.mm(rows, u).reshape(-1, kw_max, kh_max)  # (U^T x V)^T: (N, kW, kH)
        lows = []
        for f in self.k_list:
            kh, kw = 1 + 2 * ((height - 1) // (2 * f)), 1 + 2 * ((width - 1) // (2 * f))
            part = torch.mm(coeffs_t[:, :kw, :kh].reshape(-1, kh), u_t[:kh])  # (N*kw, H)
            part = part.reshape(-1, kw, height).transpose(1, 2).reshape(-1, kw)
            lows.append(torch.mm(part, v_t[:kw]).reshape(-1, channels, height, width))
        return lows

    def _coefficients_of(self, band_logits: torch.Tensor) -> torch.Tensor:
        """Coefficient maps ``[m_1, m_2 - m_1, ..., 1 - m_last]`` as ``(B, bands + 1, G, H, W)`` float32.

        ``out = sum_f m_f * (prev_f - L_f) + L_last`` (section 3) regrouped per low-pass is
        ``out = m_1 * x + sum_j c_j * L_j`` with ``c_j = m_{j+1} - m_j`` and ``c_last = 1 - m_last``;
        one small matrix product gives all of them from the band logits ``fbm_conv(x)``.
        """
        batch, _, height, width = band_logits.shape
        groups, bands = self.fbm_spatial_group, len(self.k_list)
        f32 = torch.float32
        gates = torch.sigmoid(_as(band_logits, f32)).reshape(batch, bands, groups * height * width)
        # Buffers cast as a .half()/.bfloat16() module keeps them low-precision: use float32 copies.
        coefs = torch.matmul(_as(self._band_mix, f32), gates) + _as(self._band_offset, f32)
        return coefs.reshape(batch, bands + 1, groups, height, width)

    def _fbm(self, x: torch.Tensor, channel_scale: torch.Tensor | None) -> torch.Tensor:
        """Frequency band modulation of the input (section 3), optionally times ``ca`` per channel.

        The path with autograd, for export and for large maps: out of place where autograd or the
        exporter need it, float32 whatever autocast asks for.
        """
        batch, channels, height, width = x.shape
        groups, bands = self.fbm_spatial_group, len(self.k_list)
        band_logits = self.fbm_conv(x)
        f32 = torch.float32
        with torch.autocast(x.device.type, enabled=False):
            x32 = _as(x, f32)
            lows = self._low_passes(x32)
            coefs = self._coefficients_of(band_logits).reshape(batch, bands + 1, groups, 1, height, width)
            coefs = coefs.unbind(1)
            shape = (batch, groups, channels // groups, height, width)
            out = x32.reshape(shape) * coefs[0]
            for low, coef in zip(lows, coefs[1:], strict=True):
                if _exporting():
                    out = out + low.reshape(shape) * coef
                else:
                    out.addcmul_(low.reshape(shape), coef)
            out = out.reshape(batch, channels, height, width)
            if channel_scale is not None:
                out = out * _as(channel_scale, f32).reshape(batch, channels, 1, 1)
        return _as(out, x.dtype)

    def _batched_conv(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """:func:`batched_conv` with this layer's geometry and bias (the export form)."""
        bias = None if self.bias is None else _as(self.bias, x.dtype)
        return batched_conv(x, kernels, bias, self.stride, self.padding, self.dilation, EXPORT_CONV_FORM)

    def _planes_low_passes(self, planes: torch.Tensor) -> Iterator[torch.Tensor]:
        """Inference's :meth:`_projected_low_passes` for ``(H, W, N)`` float32 planes, one ``f`` at a time.

        In this layout every product is one GEMM or one broadcast batch of them, with no transposed
        copies. The projection ``C = U^T x V`` is computed before this returns, so the caller may
        overwrite ``planes`` while it draws the low-passes; every low-pass is written into the
        same buffer, valid until the next one is drawn.
        """
        height, width, count = (int(size) for size in planes.shape)
        u, u_t = self._projections(height, planes.device)
        v, v_t = self._projections(width, planes.device)
        kh_max, kw_max = u.shape[1], v.shape[1]
        rows = torch.matmul(v_t, planes)  # x V along W: (H, kW, N)
        coeffs = torch.mm(u_t, rows.reshape(height, kw_max * count)).reshape(kh_max, kw_max, count)

        def bands() -> Iterator[torch.Tensor]:
            buffer = None
            for f in self.k_list:
                kh, kw = 1 + 2 * ((height - 1) // (2 * f)), 1 + 2 * ((width - 1) // (2 * f))
                part = torch.matmul(v[:, :kw], coeffs[:kh, :kw]).reshape(kh, width * count)  # (kh, W, N)
                if buffer is None:
                    buffer = torch.mm(u[:, :kh], part)
                else:
                    torch.mm(u[:, :kh], part, out=buffer)
                yield buffer.reshape(height, width, count)

        return bands()

    def _fbm_inference(self, x: torch.Tensor, channel_scale: torch.Tensor | None) -> torch.Tensor:
        """:meth:`_fbm` without autograd, for maps below ``FBM_FFT_MIN_SIZE``, as ``(H, W, B*Cin)``.

        Works in the layout of :meth:`_planes_low_passes`: ``ca`` is folded into the one copy of
        ``x`` into it (no copy at all for a channels-last float32 batch of 1 without ``ca``), the
        bands are accumulated in place, and the grouped convolution reads the result as a
        channels-last ``(1, B*Cin, H, W)`` tensor.
        """
        batch, channels, height, width = x.shape
        groups = self.fbm_spatial_group
        band_logits = self.fbm_conv(x)
        f32 = torch.float32
        with torch.autocast(x.device.type, enabled=False):
            coefs = self._coefficients_of(band_logits).permute(3, 4, 0, 2, 1).unsqueeze(-2).unbind(-1)
            view = x.permute(2, 3, 0, 1)  # (H, W, B, Cin)
            if channel_scale is not None:
                planes = torch.empty(view.shape, dtype=f32, device=x.device)
                torch.mul(view, _as(channel_scale, f32).reshape(1, 1, batch, channels), out=planes)
            else:
                planes = _as(view, f32)
            planes = planes.reshape(height, width, batch * channels)  # a copy unless x is laid out so
            fresh = planes.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
            lows = self._planes_low_passes(planes)
            shape = (height, width, batch, groups, channels // groups)  # coefficient maps: (H, W, B, G, 1)
            out = planes.reshape(shape).mul_(coefs[0]) if fresh else planes.reshape(shape) * coefs[0]
            for low, coef in zip(lows, coefs[1:], strict=True):
                out.addcmul_(low.reshape(shape), coef)
        return out.reshape(height, width, batch * channels)

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_dynamic:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        batch, cin, height, width = x.shape
        cout, k = self.out_channels, self.kernel_size[0]
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        pooled = x.mean(dim=(2, 3))
        ca, factor, a = self._global_attentions(pooled)
        local_input = _as(self.local_norm(pooled), torch.float32)
        inference = not torch.is_grad_enabled() and not _exporting()

        # Section 4: fa and sa (and att_multi) fold into one small (B, Cout, 1, k*k) factor of the
        # kernel, which costs nothing extra; ca scales either the kernel (B * Cout*Cin*k*k products)
        # or the input (B * Cin*H*W products), whichever is fewer, and costs nothing on the input
        # when the inference FBM copies the input anyway (all but a channels-last float32 batch of 1).
        kernel_side_ca = cout * cin * k * k < cin * height * width
        fast_fbm = inference and self.fbm_conv is not None and max(height, width) < FBM_FFT_MIN_SIZE
        if fast_fbm:
            kernel_side_ca &= x.permute(2, 3, 0, 1).is_contiguous() and x.dtype == torch.float32
        kernel_ca = ca.reshape(batch, 1, cin, 1) if kernel_side_ca else None
        slope = 1.0 if self.ksm_local_act == "sigmoid" else 2.0
        with torch.autocast(x.device.type, enabled=False):
            taps = _as(self._local_taps(), torch.float32)
            if fast_fbm:
                kernels = _inference_kernels(a, self._basis(cin_last=True), local_input, taps, factor,
                                             kernel_ca, slope)
            else:
                in_graph = _exporting() and hasattr(self, "_fdw_group")
                basis = self._graph_basis() if in_graph else self._basis()
                args = (a, basis, local_input, taps, factor, kernel_ca, slope)
                if torch.is_grad_enabled() and not _exporting():
                    kernels = _AssembleKernels.apply(*args)
                else:
                    kernels, _ = _assemble_kernels(*args, mode="inference" if inference else "export")
                kernels = kernels.reshape(batch * cout, cin, k, k)

        activation_ca = None if kernel_side_ca else ca
        if _exporting():
            # Batch-native export: the batch stays a symbolic axis (an ONNX Conv's group count could not).
            if self.fbm_conv is not None:
                x = self._fbm(x, activation_ca)
            elif activation_ca is not None:
                x = x * _as(activation_ca.reshape(batch, cin, 1, 1), x.dtype)
            return self._batched_conv(x, _as(kernels, x.dtype).reshape(batch, cout, cin, k * k))
        if fast_fbm:
            planes = _as(self._fbm_inference(x, activation_ca), x.dtype)
            x = planes.reshape(1, height, width, batch * cin).permute(0, 3, 1, 2)  # channels-last view
        else:
            if self.fbm_conv is not None:
                x = self._fbm(x, activation_ca)
            elif activation_ca is not None:
                x = x * _as(activation_ca.reshape(batch, cin, 1, 1), x.dtype)
            x = x.reshape(1, batch * cin, height, width)

        # Per-sample convolution as ONE grouped convolution: the batch is folded into the channel
        # axis (1, B*Cin, H, W) and sample b's kernel forms group b, so group b only sees sample b.
        # Kernels are float32; a half-precision module and input (no autocast) convolve in half.
        weight = _as(kernels, x.dtype)
        bias = self.bias
        if bias is not None:
            bias = _as(bias if batch == 1 else bias.repeat(batch), x.dtype)
        out = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, batch)
        # The output keeps the input's memory format, as nn.Conv2d's does (no copy for a batch of 1).
        out = out.reshape(batch, cout, out.shape[-2], out.shape[-1])
        return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _padding_of(padding: tuple[int, int] | str, k: int,
                dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of a convolution's ``padding`` (or same/valid)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        total_h, total_w = dilation[0] * (k - 1), dilation[1] * (k - 1)
        return (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
    return (padding[1], padding[1], padding[0], padding[0])


def batched_conv(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None,
                 stride: tuple[int, int], padding: tuple[int, int] | str, dilation: tuple[int, int],
                 form: str = "im2col") -> torch.Tensor:
    """Sample ``b`` of ``x`` ``(B, Cin, H, W)`` convolved with its own kernels ``(B, Cout, Cin, k*k)``.

    The export form of the per-sample convolution: batched matrix products over the ``k*k`` shifted
    views of the padded input, so the batch stays an ordinary (symbolic) axis, which ONNX Runtime
    and OpenVINO run as one operation for the whole batch. ``im2col`` stacks the views into
    ``(B, Cin*k*k, Ho*Wo)`` columns for one product; ``taps`` sums ``k*k`` products of
    ``(B, Cout, Cin) @ (B, Cin, Ho*Wo)`` (no stacked copy).
    """
    _, cin, height, width = x.shape
    cout, kk = kernels.shape[1], kernels.shape[3]
    k = math.isqrt(kk)
    left, right, top, bottom = _padding_of(padding, k, dilation)
    if left or right or top or bottom:
        x = F.pad(x, (left, right, top, bottom))
    rows = (int(height) + top + bottom - dilation[0] * (k - 1) - 1) // stride[0] + 1
    cols = (int(width) + left + right - dilation[1] * (k - 1) - 1) // stride[1] + 1
    span_h, span_w = (rows - 1) * stride[0] + 1, (cols - 1) * stride[1] + 1
    views = [x[:, :, i * dilation[0]: i * dilation[0] + span_h: stride[0],
               j * dilation[1]: j * dilation[1] + span_w: stride[1]].reshape(-1, cin, rows * cols)
             for i in range(k) for j in range(k)]
    if form == "im2col":
        columns = torch.stack(views, dim=2).reshape(-1, cin * kk, rows * cols)
        out = torch.matmul(kernels.reshape(-1, cout, cin * kk), columns)
    else:
        out = None
        for tap, view in enumerate(views):
            part = torch.matmul(kernels[:, :, :, tap], view)
            out = part if out is None else out + part
    if bias is not None:
        out = out + bias.reshape(1, cout, 1)
    return out.reshape(-1, cout, rows, cols)


def _local_logits(q: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Zero-padded 1-D convolution along channels: ``out[b, o, c, m] = sum_t taps[o, m, t] q[b, c+t-p]``.

    One broadcast matrix product ``windows (B, 1, Cin, ks) @ taps^T (1, Cout, ks, k*k)`` whose
    output is already the contiguous ``(B, Cout, Cin, k*k)`` layout of the kernels; at batch 16 it
    takes half the time of ``ks`` broadcast multiply-adds over the full-size output.
    """
    ks = taps.shape[-1]
    windows = F.pad(q, ((ks - 1) // 2, (ks - 1) // 2)).unfold(1, ks, 1)  # (B, Cin, ks)
    return torch.matmul(windows.unsqueeze(1), taps.transpose(1, 2).unsqueeze(0))


def _assemble_kernels(a: torch.Tensor, basis: torch.Tensor, q: torch.Tensor, taps: torch.Tensor,
                      factor: torch.Tensor, channel: torch.Tensor | None, slope: float,
                      mode: str = "inference") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample kernels ``(sum_g a_g B_g) * act(l) * factor [* ca]`` as ``(B, Cout, Cin, k*k)``.

    ``l`` are the local logits of ``q`` (the normalised pooled input) and ``taps``; ``act`` is
    ``sigmoid`` (slope 1) or ``1 + tanh`` (slope 2); ``factor`` holds fa, sa and att_multi.
    Every full-size temporary here is ``B * Cout*Cin*k*k`` floats, so ``mode`` picks the cheapest
    form: ``inference`` runs the local branch as one ``conv1d`` (logits in ``(Cout, k*k, Cin)``
    order, read transposed once) and works in place; ``training`` writes ``act`` contiguously in the
    kernels' layout because the backward reads it three times; ``export`` is out of place.
    Returns the kernels and ``act``.
    """
    batch = a.shape[0]
    groups, cout, cin, kk = basis.shape
    ks = taps.shape[-1]
    kernels = torch.matmul(a, basis.reshape(groups, -1)).reshape(batch, cout, cin, kk)
    if mode == "training":
        act = _local_logits(q, taps)
    else:
        logits = F.conv1d(q.unsqueeze(1), taps.reshape(cout * kk, 1, ks), padding=(ks - 1) // 2)
        act = logits.reshape(batch, cout, kk, cin).transpose(2, 3)
    if mode == "export":
        act = torch.sigmoid(act) if slope == 1.0 else 1.0 + torch.tanh(act)
        kernels = kernels * act * factor
        return (kernels if channel is None else kernels * channel), act
    if slope == 1.0:
        act.sigmoid_()
    else:
        act.tanh_().add_(1.0)
    kernels.mul_(act).mul_(factor)
    if channel is not None:
        kernels.mul_(channel)
    return kernels, act


def _inference_kernels(a: torch.Tensor, basis: torch.Tensor, q: torch.Tensor, taps: torch.Tensor,
                       factor: torch.Tensor, channel: torch.Tensor | None, slope: float) -> torch.Tensor:
    """:func:`_assemble_kernels` from ``(r*n, Cout, k*k, Cin)`` basis kernels, in place.

    In that order the local branch's ``conv1d`` output is already the kernels' layout (no
    transposed read) and the result, ``(B*Cout, Cin, k, k)``, is a channels-last weight, the layout
    oneDNN wants beside the channels-last input of the inference FBM (no reordering copy).
    """
    batch = a.shape[0]
    groups, cout, kk, cin = basis.shape
    ks = taps.shape[-1]
    kernels = torch.mm(a, basis.reshape(groups, -1)).reshape(batch, cout, kk, cin)
    act = F.conv1d(q.unsqueeze(1), taps.reshape(cout * kk, 1, ks), padding=(ks - 1) // 2)
    act = act.reshape(batch, cout, kk, cin)
    act = act.sigmoid_() if slope == 1.0 else act.tanh_().add_(1.0)
    kernels.mul_(act).mul_(factor.transpose(2, 3))
    if channel is not None:
        kernels.mul_(channel.reshape(batch, 1, 1, cin))
    k = math.isqrt(kk)
    return kernels.reshape(batch * cout, k, k, cin).permute(0, 3, 1, 2)


class _AssembleKernels(torch.autograd.Function):
    """:func:`_assemble_kernels` with a hand-written backward that needs two full-size buffers.

    Autograd through the plain expression keeps about a dozen ``B * Cout*Cin*k*k`` temporaries per
    training step, each freshly allocated (above glibc's 32 MB mmap threshold every fresh buffer is
    page-faulted in again, 10-15x the cost of reusing one); here the mixed kernel ``sum_g a_g B_g``
    is recomputed in the backward (one small GEMM) instead of being stored, the incoming gradient
    is reused in place, and the local convolution's gradients are two GEMMs.
    """

    @staticmethod
    def forward(ctx, a, basis, q, taps, factor, channel, slope):
        kernels, act = _assemble_kernels(a, basis, q, taps, factor, channel, slope, mode="training")
        ctx.save_for_backward(a, basis, q, taps, act, factor, channel)
        ctx.slope = slope
        return kernels

    @staticmethod
    def backward(ctx, grad):
        a, basis, q, taps, act, factor, channel = ctx.saved_tensors
        batch = a.shape[0]
        groups, cout, cin, kk = basis.shape
        # The kernels feed only the grouped convolution inside FDConv.forward, so this gradient is
        # that convolution's fresh weight gradient and may be overwritten below (saves a buffer).
        grad = grad.reshape(batch, cout, cin, kk).contiguous()
        flat_basis = basis.reshape(groups, -1)

        # shared = grad * mixed * act; the factors' grads are its weighted sums.
        shared = torch.matmul(a, flat_basis).reshape(batch, cout, cin, kk)
        shared.mul_(grad).mul_(act)
        if channel is None:
            grad_factor = shared.sum(dim=2, keepdim=True)
            grad_channel = None
        else:
            grad_factor = torch.matmul(shared.transpose(2, 3), channel.reshape(batch, 1, cin, 1))
            grad_factor = grad_factor.reshape(batch, cout, 1, kk)
            grad_channel = torch.matmul(shared, factor.expand(batch, cout, 1, kk).transpose(2, 3))
            grad_channel = grad_channel.sum(dim=1, keepdim=True)  # (B, 1, Cin, 1)
        grad_factor = grad_factor.sum_to_size(factor.shape)

        # d(mixed kernel) = grad * act * factor [* channel] -> grads of a and of the basis.
        grad_mixed = grad.mul_(act).mul_(factor)
        if channel is not None:
            grad_mixed.mul_(channel)
        grad_a = torch.matmul(grad_mixed.reshape(batch, -1), flat_basis.t())
        grad_basis = torch.matmul(a.t(), grad_mixed.reshape(batch, -1)).reshape(basis.shape)
        del grad, grad_mixed

        # d act / d logit = act * (slope - act) for sigmoid (slope 1) and 1 + tanh (slope 2).
        shared.mul_(factor)
        if channel is not None:
            shared.mul_(channel)
        if ctx.slope != 1.0:
            shared.mul_(ctx.slope)
        shared.addcmul_(shared, act, value=-1.0 / ctx.slope)  # grad of the logits now

        # The local convolution's gradients as two GEMMs over one (Cout*k*k, B*Cin) copy.
        ks = taps.shape[-1]
        pad = (ks - 1) // 2
        grad_logits = shared.permute(1, 3, 0, 2).reshape(cout * kk, batch * cin)
        del shared
        windows = F.pad(q, (pad, pad)).unfold(1, ks, 1).reshape(batch * cin, ks)  # q[b, c + t - p]
        # Both products with the 3-7 wide operand on the left: (ks, *) @ (*, *) runs 3-12x faster in
        # MKL than the same product with a 3-7 column result (42 ms -> 3.4 ms at 256 channels).
        grad_taps = torch.mm(windows.t(), grad_logits.t()).t().reshape(taps.shape)
        grad_windows = torch.mm(taps.reshape(cout * kk, ks).t(), grad_logits).t().reshape(batch, cin, ks)
        grad_padded = q.new_zeros(batch, cin + 2 * pad)
        for t in range(ks):
            grad_padded[:, t:t + cin] += grad_windows[:, :, t]
        grad_q = grad_padded[:, pad:pad + cin]
        return grad_a, grad_basis, grad_q, grad_taps, grad_factor, grad_channel, None
