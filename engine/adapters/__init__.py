"""What the service runs with besides the stores: the model registry on disk and the
LightGBM scorer (the one serving module that imports lightgbm)."""
