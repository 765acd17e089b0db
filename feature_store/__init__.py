"""Arbiter's online feature store: the schema, the Redis key layout and adapters."""
