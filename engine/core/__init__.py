"""The decision core: pure and synchronous, no I/O but reading its own definition files.

Imports ``common`` only, and nothing of ``feature_store``: the core owns the customer
state it decides on (customer.py) and the feature schema (schema.py), and the stores
produce them. Never grpc, redis, lightgbm or asyncio (tests/test_layers.py holds it to
that).
"""
