"""Clients of the gRPC API: the `arbiter` command, the agent desk and outbound
campaigns. They talk to the service over gRPC only."""
