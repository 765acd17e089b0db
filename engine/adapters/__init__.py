"""What the service runs with besides the stores: the model registry on disk, the
LightGBM scorer and its compiled trees (the serving modules that import lightgbm:
lightgbm_scorer.py and compiled.py)."""
