"""Models every replica sees: with ``ARBITER_MODEL_REGISTRY=redis`` the artifacts and the
promoted and challenger pointers live in Redis (feature_store/registry.py), and each
replica keeps its model folder in step with them before each reload check. A promotion
or a rollback on any machine reaches every replica within its reload interval; a replica
that cannot reach the registry keeps serving what it has, and says so (once per minute).

Training publishes every version it saves; `arbiter models promote|challenge` set the
pointers (publishing the version first when only the local folder has it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from common.errors import ArbiterError
from engine.adapters import artifact
from engine.settings import CommonSettings
from feature_store.redis_client import connect_sync
from feature_store.registry import RedisRegistry

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 60.0


class SharedModels:
    def __init__(self, model_dir: Path, registry: RedisRegistry) -> None:
        self.model_dir = model_dir
        self.registry = registry
        self._warned_at = -WARN_EVERY_SECONDS

    def sync(self) -> bool:
        """The local folder as the registry says: the promoted and challenger versions
        copied when missing, the local pointers set. True when anything changed."""
        try:
            current, challenge = self.registry.pointers()
            wanted = [v for v in (current, challenge[0] if challenge else None) if v]
            changed = False
            for version in wanted:
                if not (self.model_dir / version / "artifact.json").is_file():
                    self.model_dir.mkdir(parents=True, exist_ok=True)
                    changed |= artifact.install(
                        self.model_dir, version, self.registry.files(version)
                    )
        except ArbiterError as exc:
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_SECONDS:
                self._warned_at = now
                log.warning("model registry: %s; serving the local models", exc)
            return False
        if current and current != artifact.current_version(self.model_dir):
            artifact.set_current(self.model_dir, current)
            changed = True
        if challenge != artifact.challenger(self.model_dir):
            if challenge is None:
                artifact.set_challenger(self.model_dir, None)
            else:
                artifact.set_challenger(self.model_dir, *challenge)
            changed = True
        return changed

    def publish(self, version: str) -> None:
        """The local version's files, compiled form included, into the registry."""
        self.registry.publish(version, artifact.folder_files(self.model_dir, version))

    def promote(self, version: str) -> None:
        if not self.registry.has(version):
            self.publish(version)
        self.registry.set_current(version)

    def challenge(self, version: str | None, share: float = 0.1) -> None:
        if version is not None and not self.registry.has(version):
            self.publish(version)
        self.registry.set_challenger(version, share)


def shared_models(settings: CommonSettings, redis_url: str | None) -> SharedModels | None:
    """The shared registry when ``ARBITER_MODEL_REGISTRY=redis`` (in the Redis at
    ``redis_url``), else None: the model folder alone."""
    if settings.model_registry != "redis":
        return None
    if not redis_url:
        raise ArbiterError("ARBITER_MODEL_REGISTRY=redis needs REDIS_URL")
    return SharedModels(
        settings.model_dir, RedisRegistry(connect_sync(redis_url, timeout_seconds=2))
    )
