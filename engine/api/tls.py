"""TLS for the gRPC port, reloaded without a restart.

With a certificate and key (PEM) the port serves TLS only; with a client CA it asks every
client for a certificate that CA signed (mTLS). gRPC asks ``fetch`` for a new
configuration at each new connection: when the files changed and load as a valid pair,
new connections get them; files that do not load are refused, logged once, and the
current certificate stays. Connections already open keep theirs.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import grpc

from common.errors import ConfigurationError

log = logging.getLogger(__name__)


def _signature(paths: tuple[Path, ...]) -> tuple[tuple[float, int], ...]:
    out = []
    for path in paths:
        try:
            stat = path.stat()
            out.append((stat.st_mtime, stat.st_size))
        except OSError:
            out.append((0.0, -1))
    return tuple(out)


def _configuration(
    cert: Path, key: Path, client_ca: Path | None
) -> grpc.ServerCertificateConfiguration:
    """Reads and checks the files (the standard library loads the pair, so a certificate
    that does not match its key is refused here, not in every handshake)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        if client_ca is not None:
            ssl.create_default_context(cafile=str(client_ca))
        return grpc.ssl_server_certificate_configuration(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=client_ca.read_bytes() if client_ca else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"TLS files {cert}, {key}: {exc}") from exc


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    paths = (cert, key) if client_ca is None else (cert, key, client_ca)
    seen = {"signature": _signature(paths)}

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        signature = _signature(paths)
        if signature == seen["signature"]:
            return None
        seen["signature"] = signature  # refused files are logged once, until they change
        try:
            configuration = _configuration(cert, key, client_ca)
        except ConfigurationError as exc:
            log.error("TLS not reloaded, the current certificate stays: %s", exc)
            return None
        log.info("TLS certificate reloaded from %s", cert)
        return configuration

    return grpc.dynamic_ssl_server_credentials(
        _configuration(cert, key, client_ca),
        fetch,  # type: ignore[arg-type]  # the stubs miss that None means "no change"
        require_client_authentication=client_ca is not None,
    )
