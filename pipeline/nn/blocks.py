"""The FDConv blocks: ultralytics' C2f (YOLOv8) and C3k2 (YOLO11, YOLO26) with FDConv in their bottlenecks.

``C2f_FDConv`` subclasses ultralytics' ``C2f`` and ``C3k2_FDConv`` its ``C3k2`` (same forward, same
``forward_split`` the exporter uses); only the chosen convolutions of every ``Bottleneck`` inside
the block change (by default ``cv2``, the second 3x3), from an ultralytics ``Conv`` to
:class:`FDConvBN`. In a C3k2 block the bottlenecks sit directly in ``m``, inside ``C3k`` blocks
(``c3k=True``, ultralytics' m/l/x scales) or beside an attention block (``attn=True``); all are converted.
:class:`FDConvBN` is deliberately *not* an ultralytics ``Conv``: ``BaseModel.fuse()`` folds every
``Conv``'s BatchNorm into ``conv.weight``, which FDConv does not have (its kernel is rebuilt per
sample from Fourier coefficients). It carries its own :meth:`FDConvBN.fuse` instead, which
:func:`pipeline.nn.ultralytics.register` hooks into ``BaseModel.fuse()``.

:data:`FDCONV_BLOCKS` names the blocks a model YAML may use, each built by ultralytics as its stock
block (``STOCK``) and converted by ``from_stock`` (see :mod:`pipeline.nn.ultralytics`).
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import C2f, C3k2, Conv
from ultralytics.nn.modules.block import Bottleneck

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


BOTTLENECK_CONVS = ("cv1", "cv2")  # the two convolutions of an ultralytics Bottleneck


def convert_bottlenecks(block: nn.Module, convs: tuple[str, ...] | list[str] = ("cv2",),
                        **fdconv_options) -> None:
    """Give every ``Bottleneck`` inside ``block`` FDConv in the convolutions ``convs`` (``cv1``, ``cv2``).

    Each converted ``Conv`` becomes ``FDConvBN.from_conv(conv)``: same function at init, trained
    weights and BatchNorm statistics kept.
    """
    convs = tuple(convs)
    if not convs or any(name not in BOTTLENECK_CONVS for name in convs):
        raise ValueError(f"convs must name bottleneck convolutions {BOTTLENECK_CONVS}, got {list(convs)}")
    for module in block.modules():
        if isinstance(module, Bottleneck):
            for name in convs:
                conv = getattr(module, name)
                if not isinstance(conv, FDConvBN):
                    setattr(module, name, FDConvBN.from_conv(conv, **fdconv_options))


def _converted(cls: type, stock_class: type, block: nn.Module, convs, fdconv_options: dict) -> nn.Module:
    """A ``cls`` (an FDConv block) that takes over the modules and attributes (parse_model's bookkeeping
    included) of ``block``, an exact ``stock_class``, with FDConv in the bottlenecks' ``convs``."""
    if type(block) is not stock_class:
        raise TypeError(f"expected an ultralytics {stock_class.__name__} block, got {type(block).__name__}")
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for name, value in vars(block).items():
        if not name.startswith("_") and name != "training":
            setattr(new, name, value)
    for name, module in block.named_children():
        setattr(new, name, module)
    new.train(block.training)
    convert_bottlenecks(new, convs, **fdconv_options)
    return new


class C2f_FDConv(C2f):  # noqa: N801 (named after the block it converts, as model YAMLs spell it)
    """ultralytics' C2f with FDConv in its bottlenecks (by default the second 3x3 convolution, ``cv2``).

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of bottlenecks.
        shortcut: Residual connections in the bottlenecks.
        g: Groups of the bottlenecks' second convolution.
        e: Hidden-channel ratio.
        convs: Which convolutions of each bottleneck become FDConv: ``("cv2",)`` (the default),
            ``("cv1",)`` or ``("cv1", "cv2")``. In a model YAML: a trailing mapping, ``{convs: [cv1, cv2]}``.
        **fdconv_options: Passed to every :class:`~pipeline.nn.fdconv.FDConv`.
    """

    STOCK = "C2f"

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 convs: tuple[str, ...] = ("cv2",), **fdconv_options):
        super().__init__(c1, c2, n, shortcut, g, e)
        convert_bottlenecks(self, convs, **fdconv_options)

    @classmethod
    def from_c2f(cls, block: C2f, convs: tuple[str, ...] = ("cv2",), **fdconv_options) -> C2f_FDConv:
        """The C2f_FDConv form of a stock ``C2f``, computing the same function at init.

        Takes over ``block``'s modules (it does not copy them): the ``convs`` of every bottleneck
        become ``FDConvBN.from_conv(conv)``; everything else, trained weights and BatchNorm statistics
        included, is kept as it is.
        """
        return _converted(cls, C2f, block, convs, fdconv_options)

    from_stock = from_c2f


class C3k2_FDConv(C3k2):  # noqa: N801 (named like C2f_FDConv)
    """ultralytics' C3k2 (YOLO11, YOLO26) with FDConv in its bottlenecks (by default ``cv2``).

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of inner blocks.
        c3k: Inner blocks are ``C3k`` (two bottlenecks each) instead of single bottlenecks.
        e: Hidden-channel ratio.
        attn: Inner blocks are a bottleneck followed by an attention block.
        g: Groups of the bottlenecks' second convolution.
        shortcut: Residual connections in the bottlenecks.
        convs: Which convolutions of each bottleneck become FDConv, as for :class:`C2f_FDConv`.
        **fdconv_options: Passed to every :class:`~pipeline.nn.fdconv.FDConv`.
    """

    STOCK = "C3k2"

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, attn: bool = False,
                 g: int = 1, shortcut: bool = True, convs: tuple[str, ...] = ("cv2",), **fdconv_options):
        super().__init__(c1, c2, n, c3k, e, attn, g, shortcut)
        convert_bottlenecks(self, convs, **fdconv_options)

    @classmethod
    def from_c3k2(cls, block: C3k2, convs: tuple[str, ...] = ("cv2",), **fdconv_options) -> C3k2_FDConv:
        """The C3k2_FDConv form of a stock ``C3k2``, computing the same function at init (takes over its
        modules, as :meth:`C2f_FDConv.from_c2f` does)."""
        return _converted(cls, C3k2, block, convs, fdconv_options)

    from_stock = from_c3k2


# Block names a model YAML may use -> their classes (ultralytics builds them as ``cls.STOCK``).
FDCONV_BLOCKS = {cls.__name__: cls for cls in (C2f_FDConv, C3k2_FDConv)}
