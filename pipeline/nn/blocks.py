"""The C2f_FDConv block: ultralytics' C2f whose bottlenecks convolve their second 3x3 with FDConv.

``C2f_FDConv`` subclasses ultralytics' ``C2f`` (same forward, same ``forward_split`` the exporter
uses); only each bottleneck's ``cv2`` changes, from an ultralytics ``Conv`` to :class:`FDConvBN`.
:class:`FDConvBN` is deliberately *not* an ultralytics ``Conv``: ``BaseModel.fuse()`` folds every
``Conv``'s BatchNorm into ``conv.weight``, which FDConv does not have (its kernel is rebuilt per
sample from Fourier coefficients). It carries its own :meth:`FDConvBN.fuse` instead, which
:func:`pipeline.nn.ultralytics.register` hooks into ``BaseModel.fuse()``.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import C2f, Conv

from pipeline.nn.fdconv import FDConv


class FDConvBN(nn.Module):
    """FDConv -> BatchNorm2d -> activation: ultralytics' ``Conv`` block with FDConv as its convolution.

    Args:
        c1: Input channels.
        c2: Output channels.
        k: Kernel size.
        s: Stride.
        g: Groups (FDConv is a plain convolution unless ``g == 1``).
        act: The activation module; ``None`` takes ultralytics' current ``Conv.default_act``
            (SiLU unless the model YAML sets ``activation``), as a stock ``Conv`` would.
        **fdconv_options: Passed to :class:`~pipeline.nn.fdconv.FDConv`.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act: nn.Module | None = None,
                 **fdconv_options):
        super().__init__()
        self.conv = FDConv(c1, c2, k, stride=s, padding=k // 2, groups=g, bias=False, **fdconv_options)
        self.bn = nn.BatchNorm2d(c2)
        self.act = Conv.default_act if act is None else act

    @classmethod
    def from_conv(cls, block: Conv, **fdconv_options) -> FDConvBN:
        """The FDConv form of an ultralytics ``Conv`` block, computing the same function at init.

        The convolution becomes ``FDConv.from_conv(block.conv)``; the BatchNorm (weights and running
        statistics) and the activation are taken over from ``block``.
        """
        if not hasattr(block, "bn"):
            raise ValueError("cannot convert a fused Conv block (its BatchNorm is folded into the conv)")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.conv = FDConv.from_conv(block.conv, **fdconv_options)
        new.bn = block.bn
        new.act = block.act
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, normalise (or apply the folded BatchNorm after :meth:`fuse`), activate."""
        y = self.conv(x)
        if hasattr(self, "bn"):
            return self.act(self.bn(y))
        return self.act(torch.addcmul(self.shift, y, self.scale))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm (inference statistics) into a per-channel scale and shift of the output.

        FDConv's per-sample kernel cannot absorb a per-output-channel scale the way a static weight
        can (scaling rows of the kernel mixes the Fourier groups), so the affine stays a separate,
        cheap step. Idempotent; like ultralytics' own fuse, the result is for inference only.
        """
        if not hasattr(self, "bn"):
            return
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).clone())
        del self.bn


class C2f_FDConv(C2f):  # noqa: N801 (the seed's model files name the block this way)
    """ultralytics' C2f with every bottleneck's second 3x3 convolution (``cv2``) an :class:`FDConvBN`.

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of bottlenecks.
        shortcut: Residual connections in the bottlenecks.
        g: Groups of the bottlenecks' second convolution.
        e: Hidden-channel ratio.
        **fdconv_options: Passed to every :class:`~pipeline.nn.fdconv.FDConv`.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 **fdconv_options):
        super().__init__(c1, c2, n, shortcut, g, e)
        for bottleneck in self.m:
            stock = bottleneck.cv2
            bottleneck.cv2 = FDConvBN(self.c, self.c, stock.conv.kernel_size[0], 1, g=g, act=stock.act,
                                      **fdconv_options)

    @classmethod
    def from_c2f(cls, block: C2f, **fdconv_options) -> C2f_FDConv:
        """The C2f_FDConv form of a stock ``C2f``, computing the same function at init.

        Takes over ``block``'s modules (it does not copy them): every bottleneck's ``cv2`` becomes
        ``FDConvBN.from_conv(cv2)``; everything else, trained weights and BatchNorm statistics
        included, is kept as it is.
        """
        if type(block) is not C2f:
            raise TypeError(f"expected an ultralytics C2f block, got {type(block).__name__}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.c, new.cv1, new.cv2, new.m = block.c, block.cv1, block.cv2, block.m
        for bottleneck in new.m:
            bottleneck.cv2 = FDConvBN.from_conv(bottleneck.cv2, **fdconv_options)
        for attribute in ("i", "f", "type", "np"):  # parse_model's bookkeeping, when present
            if hasattr(block, attribute):
                setattr(new, attribute, getattr(block, attribute))
        return new
