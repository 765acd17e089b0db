"""Arbiter's offline side: the demo world, simulated logs and model training."""
