"""The application service: the core plus the stores, with deadlines, the breaker, the
decision log and live reloads. Async and transport-free: no grpc, no protobuf."""
