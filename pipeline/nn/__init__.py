"""Neural-network layers: FDConv and the C2f_FDConv block, with a thin ultralytics adapter."""

__all__ = ["FDConv"]


def __getattr__(name: str):
    # Lazy so that importing the package (e.g. for `fdpose model --help`) does not import torch.
    if name == "FDConv":
        from pipeline.nn.fdconv import FDConv

        return FDConv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
