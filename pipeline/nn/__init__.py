"""Neural-network layers: FDConv and the C2f_FDConv block, with a thin ultralytics adapter."""
