"""The model registry in Redis: model artifacts and the promoted and challenger pointers
where every replica of the service sees them (``ARBITER_MODEL_REGISTRY=redis``).

Artifacts are small (a 150-tree model with its compiled object is a few MB), so each
version is one hash of its files; the pointers are two strings. All keys carry the hash
tag ``{registry}``: on a cluster they live in one slot. See docs/redis-keys.md. Serving
keeps a local copy of each version it needs (engine/service/registry.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from common.errors import ConfigurationError
from feature_store import keys
from feature_store.redis_client import SyncClient, translated

_TAG = f"{keys.PREFIX}:{{registry}}"
CURRENT = f"{_TAG}:current"  # string: the promoted version
CHALLENGER = f"{_TAG}:challenger"  # string "<version> <share>", absent when none
VERSIONS = f"{_TAG}:versions"  # set of the versions published


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def model_key(version: str) -> str:
    """Hash of one version's files: file name -> content."""
    return f"{_TAG}:model:{version}"


class RedisRegistry:
    def __init__(self, client: SyncClient) -> None:
        self._client = client

    def publish(self, version: str, files: Mapping[str, bytes]) -> None:
        """Stores the version's files (one HSET: whole or not at all)."""
        if "artifact.json" not in files or "model.txt" not in files:
            raise ConfigurationError(f"model {version}: artifact.json and model.txt are needed")
        with translated("model registry write"):
            self._client.hset(model_key(version), mapping=dict(files))  # type: ignore[arg-type]
            self._client.sadd(VERSIONS, version)

    def has(self, version: str) -> bool:
        with translated("model registry read"):
            return bool(self._client.exists(model_key(version)))

    def files(self, version: str) -> dict[str, bytes]:
        with translated("model registry read"):
            stored: dict[bytes, bytes] = self._client.hgetall(model_key(version))  # type: ignore[assignment]
        if not stored:
            raise ConfigurationError(f"no model version {version} in the registry")
        return {name.decode(): content for name, content in stored.items()}

    def versions(self) -> list[str]:
        with translated("model registry read"):
            return sorted(v.decode() for v in self._client.smembers(VERSIONS))  # type: ignore[union-attr]

    def pointers(self) -> tuple[str | None, tuple[str, float] | None]:
        """The promoted version and the challenger with its share (one round trip)."""
        with translated("model registry read"):
            current, challenge = (_text(v) for v in self._client.mget(CURRENT, CHALLENGER))
        challenger = None
        if challenge:
            version, share = challenge.split()
            challenger = (version, float(share))
        return current, challenger

    def set_current(self, version: str) -> None:
        if not self.has(version):
            raise ConfigurationError(f"no model version {version} in the registry")
        with translated("model registry write"):
            self._client.set(CURRENT, version)

    def set_challenger(self, version: str | None, share: float = 0.1) -> None:
        """Serves ``version`` to ``share`` of the customers (None: stop the challenge)."""
        if version is None:
            with translated("model registry write"):
                self._client.delete(CHALLENGER)
            return
        if not 0 < share < 1:
            raise ConfigurationError(f"challenger share {share} must be between 0 and 1")
        if not self.has(version):
            raise ConfigurationError(f"no model version {version} in the registry")
        with translated("model registry write"):
            self._client.set(CHALLENGER, f"{version} {share}")
