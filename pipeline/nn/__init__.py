"""Neural-network layers: FDConv and the FDConv blocks (C2f_FDConv, C3k2_FDConv), the ultralytics adapter,
model info and pretrained starts."""

__all__ = ["FDConv"]


def __getattr__(name: str):
    # Lazy so that importing the package (e.g. for `fdpose model --help`) does not import torch.
    if name == "FDConv":
        from pipeline.nn.fdconv import FDConv

        return FDConv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
