"""Arbiter's online feature store: the Redis key layout and the stores that produce the
core's customer state (engine/core/customer.py) from it."""
