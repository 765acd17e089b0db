"""Arbiter's decision engine: the pure decision core and the gRPC service around it."""
