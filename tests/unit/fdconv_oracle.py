"""A slow, literal implementation of FDConv's math (the docstring of ``pipeline.nn.fdconv``), a test oracle.

It reads the values of an FDConv's parameters (differentiably, so gradients can be compared too)
and recomputes the layer's output sample by sample, in float64, following the equations one by one
(no basis kernels, no caches, no projections, no grouped convolution). Frequency groups, FBM masks
and the default temperatures are derived here again, independently of the layer's helpers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max absolute difference over max absolute value: the yardstick of every comparison."""
    expected = expected.double()
    return ((actual.double() - expected).abs().max() / expected.abs().max()).item()


def oracle_groups(rows: int, cols: int, n: int) -> list[list[tuple[int, int]]]:
    """Section 1: cells of the rfft2 grid sorted by radius (ties by flat index), split into n groups."""
    width = cols // 2 + 1
    cells = []
    for u in range(rows):
        qu = u if u <= (rows - 1) // 2 else u - rows
        for v in range(width):
            # radius^2 = (qu/rows)^2 + (v/cols)^2, scaled by (rows*cols)^2 to compare ties exactly
            cells.append(((qu * cols) ** 2 + (v * rows) ** 2, u * width + v, (u, v)))
    cells.sort(key=lambda cell: (cell[0], cell[1]))
    base, extra = divmod(len(cells), n)
    groups, start = [], 0
    for g in range(n):
        size = base + (1 if g < extra else 0)
        groups.append([cell[2] for cell in cells[start:start + size]])
        start += size
    return groups


def oracle_mask(height: int, width: int, f: int) -> torch.Tensor:
    """Section 3: keep (u, v) iff max(|fu|, |fv|) < 0.5 / f, decided in integers (2 f |q| < n)."""
    mask = torch.zeros(height, width // 2 + 1, dtype=torch.float64)
    for u in range(height):
        qu = u if u <= (height - 1) // 2 else u - height
        for v in range(width // 2 + 1):
            if 2 * f * abs(qu) < height and 2 * f * v < width:
                mask[u, v] = 1.0
    return mask


def oracle_temperatures(kernel_temp: float = 1.0, temp: float | None = None) -> tuple[float, float]:
    """Section 2: ``(T, Tk)``: ``Tk = kernel_temp`` (1.0 by default) and ``T = temp``, else ``Tk``."""
    return (kernel_temp if temp is None else temp), kernel_temp


def _layer_norm(z: torch.Tensor, norm) -> torch.Tensor:
    mean = z.mean()
    var = ((z - mean) ** 2).mean()
    return (z - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()


def oracle_forward(layer, x: torch.Tensor, temperatures: tuple[float, float] | None = None) -> torch.Tensor:
    """The layer's output for ``x`` computed literally from the math (float64).

    ``temperatures`` is ``(T, Tk)``; by default :func:`oracle_temperatures` of a layer built without
    temperature arguments (pass the layer's own arguments through it for other layers).
    """
    if not layer.is_dynamic:
        return F.conv2d(x.double(), layer.weight.double(),
                        None if layer.bias is None else layer.bias.double(),
                        layer.stride, layer.padding, layer.dilation, layer.groups)
    x = x.double()
    batch, cin, height, width = x.shape
    cout, k = layer.out_channels, layer.kernel_size[0]
    n, r = layer.kernel_num, layer.param_ratio
    assert layer.param_reduction == 1.0, "the oracle covers param_reduction = 1"
    rows, cols = cout * k, cin * k
    s = min(cin, cout) // 2
    alpha = s * n * r / layer.param_reduction
    temp, kernel_temp = temperatures if temperatures is not None else oracle_temperatures()
    att_multi = layer.att_multi
    group_masks = torch.zeros(n, rows, cols // 2 + 1, dtype=torch.float64)
    for g, cells in enumerate(oracle_groups(rows, cols, n)):
        for (u, v) in cells:
            group_masks[g, u, v] = 1.0
    d = torch.view_as_complex(layer.dft_weight.double().contiguous())  # (r, rows, cols//2+1)
    outputs = []
    for b in range(batch):
        xb = x[b]
        p = xb.mean(dim=(1, 2))  # (Cin,)

        # KSM global.
        h = layer.ksm_fc.weight.double() @ p
        h = _layer_norm(h, layer.ksm_norm)
        h = layer.ksm_act.scale.double() * torch.relu(h) ** 2 + layer.ksm_act.bias.double()

        # The fused head's output rows are [channel | filter | spatial | kernel].
        z_all = layer.ksm_heads.weight.double() @ h + layer.ksm_heads.bias.double()
        z_channel, z_filter, z_spatial, z_kernel = torch.split(z_all, list(layer.head_sizes))

        if layer.ksm_global_act == "tanh":
            def act(z):
                return 1 + torch.tanh(z / temp)
        else:
            def act(z):
                return torch.sigmoid(z / temp) * att_multi
        ca = act(z_channel)
        fa = act(z_filter)
        sa = act(z_spatial).reshape(k, k) if k > 1 else torch.ones(1, 1, dtype=x.dtype)
        if n * r == 1:
            a = torch.ones(1, dtype=x.dtype)
        else:
            z = z_kernel
            if layer.ksm_global_act == "softmax":
                a = torch.softmax(z / kernel_temp, dim=0)
            elif layer.ksm_global_act == "tanh":
                a = (1 + torch.tanh(z / kernel_temp)) / (n * r)
            else:
                a = torch.sigmoid(z / kernel_temp) * 2 / (n * r)

        # KSM local: 1-D convolution along the channel axis, zero padding.
        q = _layer_norm(p, layer.local_norm)
        wl = layer.local_conv.weight.double()  # (Cout*k*k, 1, ks)
        ks = wl.shape[-1]
        assert ks == round(math.log2(cin) / 2 + 0.5) // 2 * 2 + 1
        pad = (ks - 1) // 2
        qp = torch.cat([torch.zeros(pad, dtype=x.dtype), q, torch.zeros(pad, dtype=x.dtype)])
        logits = torch.zeros(cout * k * k, cin, dtype=x.dtype)
        for t in range(ks):
            logits += wl[:, 0, t:t + 1] * qp[t:t + cin][None, :]
        if layer.ksm_local_act == "tanh":
            la_flat = 1 + torch.tanh(logits)
        else:
            la_flat = torch.sigmoid(logits) * att_multi
        # l[b, o, c, i, j] = output[b, o*k*k + i*k + j, c]
        la = la_flat.reshape(cout, k, k, cin).permute(0, 3, 1, 2)

        # FDW: the sample's spectrum, then its kernel.
        spectrum = torch.zeros(rows, cols // 2 + 1, dtype=torch.complex128)
        for i in range(r):
            for g in range(n):
                spectrum = spectrum + a[i * n + g] * alpha * d[i] * group_masks[g]
        matrix = torch.fft.irfft2(spectrum, s=(rows, cols))
        kernel = matrix.reshape(cout, k, cin, k).permute(0, 2, 1, 3)  # W[o, c, i, j] = M[o*k+i, c*k+j]
        kernel = sa[None, None] * ca[None, :, None, None] * fa[:, None, None, None] * kernel * la

        # FBM.
        if layer.fbm_conv is not None:
            spectrum_x = torch.fft.rfft2(xb, norm="ortho")
            band_logits = F.conv2d(xb[None], layer.fbm_conv.weight.double(), layer.fbm_conv.bias.double(),
                                   padding=1)[0]
            groups_fbm = layer.fbm_spatial_group
            per_group = cin // groups_fbm
            prev = xb
            out = torch.zeros_like(xb)
            for index, f in enumerate(layer.k_list):
                low = torch.fft.irfft2(spectrum_x * oracle_mask(height, width, f), s=(height, width),
                                       norm="ortho")
                maps = 2 * torch.sigmoid(band_logits[index * groups_fbm:(index + 1) * groups_fbm])
                scale = maps.repeat_interleave(per_group, dim=0)
                out = out + scale * (prev - low)
                prev = low
            xb = out + prev

        y = F.conv2d(xb[None], kernel, None, layer.stride, layer.padding, layer.dilation)[0]
        if layer.bias is not None:
            y = y + layer.bias.double()[:, None, None]
        outputs.append(y)
    return torch.stack(outputs)
