"""The decision core: pure and synchronous, no I/O but reading its own definition files.

May import ``common`` and ``feature_store``'s schema and record types; never grpc, redis,
lightgbm or asyncio (tests/test_layers.py holds it to that).
"""
