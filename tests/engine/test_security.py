"""Trust, as an outside caller meets it: TLS and mTLS on the real port, certificates that
change without a restart, API keys with roles and rates, reflection that can be off, and
a server that will not expose itself unguarded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from common.errors import ConfigurationError
from engine.api.auth import new_key, parse_keys
from engine.api.channel import open_channel
from engine.api.server import security_from
from engine.settings import ClientSettings, ServerSettings
from feature_store.memory_store import MemoryStore
from tests.conftest import ServerThread

DECIDE = decision_pb2.DecideRequest(customer_id="cust-000042", channel=common_pb2.CHANNEL_WEB)


def write_cert(folder: Path, ca: trustme.CA, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    return cert_file, key_file


def ca_file(folder: Path, ca: trustme.CA, name: str) -> Path:
    path = folder / f"{name}-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def decide(target: str, client: ClientSettings) -> decision_pb2.DecideResponse:
    with open_channel(client, target) as channel:
        return decision_pb2_grpc.DecisionServiceStub(channel).Decide(DECIDE, timeout=5)


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def test_tls_serves_tls_only_and_a_new_certificate_needs_no_restart(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, tmp_path: Path, ca: trustme.CA
) -> None:
    cert, key = write_cert(tmp_path, ca, "server")
    server = server_factory(memory, tls_cert_file=cert, tls_key_file=key)
    target = f"127.0.0.1:{server.running.port}"
    trusted = ClientSettings(tls_ca_file=ca_file(tmp_path, ca, "first"))

    assert decide(target, trusted).actions
    assert code_of(lambda: decide(target, ClientSettings())) == grpc.StatusCode.UNAVAILABLE

    other = trustme.CA()  # the operator renews the certificate with another CA
    new_cert, new_key_file = write_cert(tmp_path / "new", other, "server")
    time.sleep(0.01)
    cert.write_bytes(new_cert.read_bytes())
    key.write_bytes(new_key_file.read_bytes())
    renewed = ClientSettings(tls_ca_file=ca_file(tmp_path, other, "second"))
    assert decide(target, renewed).actions  # a new connection gets the new certificate
    assert code_of(lambda: decide(target, trusted)) == grpc.StatusCode.UNAVAILABLE

    key.write_text("not a key")  # a broken renewal is refused; the current one stays
    assert decide(target, renewed).actions


def test_mtls_asks_every_client_for_a_certificate_of_its_ca(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, tmp_path: Path, ca: trustme.CA
) -> None:
    cert, key = write_cert(tmp_path, ca, "server")
    clients = trustme.CA()
    client_cert, client_key = write_cert(tmp_path, clients, "client")
    server = server_factory(
        memory,
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=ca_file(tmp_path, clients, "clients"),
    )
    target = f"127.0.0.1:{server.running.port}"
    server_ca = ca_file(tmp_path, ca, "server")

    anonymous = ClientSettings(tls_ca_file=server_ca)
    assert code_of(lambda: decide(target, anonymous)) == grpc.StatusCode.UNAVAILABLE
    stranger_cert, stranger_key = write_cert(tmp_path, trustme.CA(), "stranger")
    stranger = ClientSettings(
        tls_ca_file=server_ca, client_cert_file=stranger_cert, client_key_file=stranger_key
    )
    assert code_of(lambda: decide(target, stranger)) == grpc.StatusCode.UNAVAILABLE
    known = ClientSettings(
        tls_ca_file=server_ca, client_cert_file=client_cert, client_key_file=client_key
    )
    assert decide(target, known).actions


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A keys file and the secrets of its keys, by id."""
    secrets, entries = {}, []
    for key_id, roles in [
        ("web", ["decide"]),
        ("agent", ["profile:read", "events:write"]),
        ("ops", ["admin"]),
        ("slow", ["decide"]),
    ]:
        secret, entry = new_key(key_id, roles)
        secrets[key_id] = secret
        entries.append(entry + ("rate_per_second = 2\n" if key_id == "slow" else ""))
    path = tmp_path / "keys.toml"
    path.write_text("\n".join(entries))
    yield path, secrets


def test_keys_and_roles_decide_who_may_call_what(
    server_factory: Callable[..., ServerThread],
    memory: MemoryStore,
    keys: tuple[Path, dict[str, str]],
) -> None:
    path, secrets = keys
    server = server_factory(memory, api_keys_file=path, reflection=False)
    target = f"127.0.0.1:{server.running.port}"

    def as_(key_id: str | None) -> ClientSettings:
        return ClientSettings(api_key=secrets[key_id] if key_id else None)

    def profile(client: ClientSettings) -> object:
        with open_channel(client, target) as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            return stub.GetProfile(profile_pb2.GetProfileRequest(customer_id="cust-1"), timeout=5)

    assert code_of(lambda: decide(target, as_(None))) == grpc.StatusCode.UNAUTHENTICATED
    wrong = ClientSettings(api_key="arb_not-a-key")
    assert code_of(lambda: decide(target, wrong)) == grpc.StatusCode.UNAUTHENTICATED
    assert decide(target, as_("web")).actions
    assert code_of(lambda: profile(as_("web"))) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: decide(target, as_("agent"))) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: profile(as_("agent"))) == grpc.StatusCode.OK
    assert code_of(lambda: profile(as_("ops"))) == grpc.StatusCode.OK
    assert decide(target, as_("ops")).actions
    # over its rate (2 a second, a burst of 2): the third call at once is refused
    codes = [code_of(lambda: decide(target, as_("slow"))) for _ in range(3)]
    assert codes[:2] == [grpc.StatusCode.OK] * 2
    assert codes[2] == grpc.StatusCode.RESOURCE_EXHAUSTED

    with open_channel(ClientSettings(), target) as channel:  # no key at all
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        assert code_of(lambda: list(reflection)) == grpc.StatusCode.UNIMPLEMENTED

    # a key added to the file works without a restart
    secret, entry = new_key("late", ["decide"])
    time.sleep(1.1)
    path.write_text(path.read_text() + "\n" + entry)
    time.sleep(1.1)
    assert decide(target, ClientSettings(api_key=secret)).actions


def test_an_unguarded_port_beyond_loopback_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="without TLS and API keys"):
        security_from(ServerSettings(host="0.0.0.0"))
    assert security_from(ServerSettings(host="0.0.0.0", insecure=True)).keys is None
    assert security_from(ServerSettings(host="::1")).credentials is None  # loopback is fine


def test_a_new_key_round_trips() -> None:
    secret, entry = new_key("web-frontend", ["decide", "profile:read"])
    (key,) = parse_keys(entry, "pasted")
    assert key.id == "web-frontend" and key.roles == {"decide", "profile:read"}
    assert secret not in entry  # the file holds the hash only


def test_the_cli_calls_a_tls_and_key_guarded_service(
    server_factory: Callable[..., ServerThread],
    memory: MemoryStore,
    keys: tuple[Path, dict[str, str]],
    tmp_path: Path,
    ca: trustme.CA,
) -> None:
    path, secrets = keys
    cert, key = write_cert(tmp_path, ca, "server")
    server = server_factory(memory, tls_cert_file=cert, tls_key_file=key, api_keys_file=path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    command = [
        sys.executable,
        "-m",
        "training.cli",
        "decide",
        "cust-000042",
        "--target",
        f"localhost:{server.running.port}",
        "--tls-ca",
        str(ca_file(tmp_path, ca, "cli")),
    ]

    done = subprocess.run(
        command, env={**clean, "ARBITER_API_KEY": secrets["web"]}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "decision d1_" in done.stdout
    refused = subprocess.run(command, env=clean, capture_output=True, text=True)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
