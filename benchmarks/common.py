"""Helpers shared by the benchmarks: the Redis to use, `arbiter serve` in a process of its
own, percentiles and a catalog of N offers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

import grpc
import numpy as np
import redis

from common.ports import free_port
from engine.settings import DEFAULTS, CommonSettings, ServerSettings
from feature_store.embedded import redis_or_embedded
from feature_store.redis_client import SyncClient


def benchmark_redis() -> AbstractContextManager[str]:
    """``REDIS_URL`` when set (benchmarks write ``arb:*`` and ``bench:*`` keys there), else
    an embedded redis-server that lives as long as the block."""
    return redis_or_embedded(CommonSettings().redis_url)


def flush(client: SyncClient) -> None:
    """Empties the database of one server, or every primary of a cluster."""
    if isinstance(client, redis.RedisCluster):
        client.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
    else:
        client.flushdb()


def start_server(
    settings: ServerSettings,
    port: int,
    workers: int = 1,
    *,
    log: IO[bytes] | None = None,
    tree: Path | None = None,
    pythonpath: Sequence[Path] = (),
    demo: bool = False,
    session: bool = False,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """`arbiter serve` with ``settings``' Redis, data, catalog and reload period on
    ``port``, in a process of its own (``workers`` > 1: a supervisor and its workers),
    once every worker answers. One worker by default: a latency figure is one server's.
    ``log``: where its output and log lines go (default: its log to our stderr).
    ``tree``: the server's code from another checkout of the project (its generated code
    in place), with this environment's packages: a before-and-after in one run.
    ``pythonpath``: folders searched first (benchmarks/gc_watch). ``demo``: `serve --demo`
    (the demo world loaded into the Redis and a model trained, in the serving process,
    when absent).
    ``session``: in a process group of its own (killed whole: ``os.killpg``).
    ``extra``: more settings, as ``log_writer="inline"`` (ARBITER_LOG_WRITER)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
        "REDIS_URL": settings.redis_url or "",
        "ARBITER_DATA_DIR": str(settings.data_dir),
        "ARBITER_CATALOG_PATH": str(settings.catalog_path),
        "ARBITER_RELOAD_SECONDS": str(settings.reload_seconds),
        "ARBITER_LOG_QUEUE_SIZE": "100000",
        "ARBITER_METRICS_PORT": str(free_port()),  # servers side by side: one each
        # no always-on run's daily pass over the base (seconds of work as it starts)
        # inside a measurement of the decision path; a bench that wants one says so
        "ARBITER_OUTBOUND_RUN_SECONDS": "0",
        **{f"ARBITER_{name.upper()}": value for name, value in extra.items()},
    }
    path = [*pythonpath, *([tree] if tree is not None else [])]
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    command = [sys.executable, "-m", "training.cli", "serve", "--port", str(port)]
    command += ["--demo"] if demo else []
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=env,
        cwd=tree,
        stdout=log or subprocess.DEVNULL,
        stderr=None if log is None else subprocess.STDOUT,
        start_new_session=session,
    )
    options = [("grpc.use_local_subchannel_pool", 1)]
    for _ in range(workers * 4):  # new connections until every worker answers
        with grpc.insecure_channel(f"127.0.0.1:{port}", options) as channel:
            grpc.channel_ready_future(channel).result(timeout=600)  # --demo trains first
    if workers > 1:
        time.sleep(1.0)  # the kernel spreads connections only over listening workers
    return process


def stop_server(
    process: subprocess.Popen[bytes], seconds: float = 60.0, log_path: Path | None = None
) -> None:
    """SIGTERM, as an orchestrator stops it, and a wait of ``seconds``. A server that does
    not stop in time is killed, and the error says where it was: its threads' stacks
    (py-spy) and the last lines of its log at ``log_path``."""
    process.terminate()
    try:
        process.wait(seconds)
        return
    except subprocess.TimeoutExpired:
        pass
    dumped = subprocess.run(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "dump",
            "--subprocesses",
            "--pid",
            str(process.pid),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    process.kill()
    process.wait()
    tail = log_path.read_text(errors="replace").splitlines()[-40:] if log_path else []
    raise RuntimeError(
        f"the server did not stop within {seconds:.0f} s of SIGTERM; its stacks:\n"
        f"{dumped.stdout or dumped.stderr}\nits log's last lines:\n" + "\n".join(tail)
    )


def percentiles(samples_us: list[float] | np.ndarray) -> str:
    a = np.asarray(samples_us)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return f"p50 {p50:8.0f} us  p90 {p90:8.0f} us  p99 {p99:8.0f} us  (n={a.size})"


def wide_catalog(n: int, path: Path, *, caps: bool = True) -> Path:
    """The demo catalog's offers copied to ``n`` offers, every one eligible on the web for
    every known customer (no audience, stage or placement limits): ``n`` candidates.
    With ``caps`` every offer is capped at 3 a week, so decisions reserve their contacts."""
    base = tomllib.loads((DEFAULTS / "catalog.toml").read_text())["offer"]
    lines = ['[template_defaults]\nfirst_name = "there"\n']
    if caps:
        lines.append("[contact_policy.offer_defaults]\ncaps = [{ days = 7, max = 3 }]\n")
    for i in range(n):
        offer = base[i % len(base)]
        lines.append("[[offer]]")
        lines.append(f'id = "{offer["id"]}_{i:03d}"')
        lines.append(f'category = "{offer["category"]}_{i:03d}"')
        lines.append(f"value = {offer['value'] * (0.5 + (i % 7) / 7):.1f}")
        lines.append(f"tags = {offer.get('tags', [])!r}".replace("'", '"'))
        lines.append("[offer.message]")
        for key, text in offer["message"].items():
            if isinstance(text, str):
                lines.append(f"{key} = {text!r}".replace("'", '"') if '"' not in text else "")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def black_hole(port: int) -> list[socket.socket]:
    """A listener on ``port`` that never accepts, its queue filled: SYNs to it go
    unanswered (and the sockets to close when it is over)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(50):  # the port can stay busy for a moment after a kill
        try:
            listener.bind(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.02)
    listener.listen(0)
    fillers = []
    for _ in range(3):  # backlog 0 queues one; the rest wait on their SYN
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    return [listener, *fillers]
