"""The services a running Arbiter offers, read by gRPC server reflection, as grpcurl's
``list`` shows them (grpcurl is not needed): ``python -m engine.clients.reflection
[host:port]``. Plaintext; a TLS service is described by its protos (protos/arbiter/v1/)."""

from __future__ import annotations

import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from engine.settings import DEFAULT_TARGET


def services(target: str) -> dict[str, list[str]]:
    """Each service the server at ``target`` reflects, with its methods."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        return {
            name: [m.name for m in pool.FindServiceByName(name).methods]
            for name in database.get_services()
        }


def main(argv: list[str]) -> int:
    target = argv[0] if argv else DEFAULT_TARGET
    try:
        found = services(target)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    for name, methods in found.items():
        print(name)
        for method in methods:
            print(f"  {method}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
