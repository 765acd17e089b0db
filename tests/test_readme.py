"""The README's quick start, run as written against `arbiter serve --demo` (what `make run`
starts), at whatever hour the test runs: every line must succeed and show what its
comment promises. Only the addresses change (free ports, not the defaults a running
service may hold) and ``<decision_id>`` becomes the id the decide before it printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.ports import free_port

ROOT = Path(__file__).resolve().parent.parent

# What a line's comment promises, as its output shows it (the line: a part of it).
PROMISES = {
    "arbiter status": "SERVING",
    "--channel call-center        # agent script": "agent script:",
    "decide cust-000042 --channel email": "fibre_broadband: declined: cool-down",
    "profile cust-000042": "product_view  category=fibre",
    "outcome <decision_id>": "recorded: decline of fibre_broadband by cust-000042",
    "decide cust-000001 --channel sms": "consent: opted out of sms on",
    "forget cust-000001": "forgot cust-000001:",
    "campaign --customers": "50 customers in",
    "engine.clients.reflection": "arbiter.v1.DecisionService",
    "/metrics": "arbiter_rpc_seconds",
    "export-logs": "exported",
}


def quick_start() -> list[str]:
    """The lines of the README's second shell block (the one to try in another terminal)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line for line in blocks[1].splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """`arbiter serve --demo` in a folder of its own, on free ports; the folder (with
    .venv pointing at ours) and the environment the README's lines run in."""
    folder = tmp_path_factory.mktemp("newcomer")
    (folder / ".venv").symlink_to(Path(sys.executable).parent.parent)
    port, metrics_port, desk_port = free_port(), free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "REDIS_"))}
    env = {
        **clean,
        "ARBITER_PORT": str(port),
        "ARBITER_METRICS_PORT": str(metrics_port),
        "ARBITER_WORKERS": "1",
        "ARBITER_TARGET": f"127.0.0.1:{port}",
        "ARBITER_DESK_TARGET": f"127.0.0.1:{port}",
        "ARBITER_DESK_PORT": str(desk_port),
        "PYTHONPATH": str(ROOT),
        # a smaller demo world and first model than make run's (50,000 and 100,000 rows):
        # the README's customers are among the first 50, and the suite stays quick
        "ARBITER_DEMO_CUSTOMERS": "5000",
        "ARBITER_TRAIN_ROWS": "20000",
    }
    log = (folder / "serve.log").open("w+")
    service = subprocess.Popen(
        [str(folder / ".venv/bin/arbiter"), "serve", "--demo"],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops." not in (folder / "serve.log").read_text():
            assert service.poll() is None, (folder / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the demo never served"
            time.sleep(0.2)
        yield folder, env
    finally:
        service.terminate()
        service.wait(timeout=60)
        log.close()


def test_every_quick_start_line_runs_and_shows_what_it_promises(
    demo: tuple[Path, dict[str, str]],
) -> None:
    folder, env = demo
    port, metrics_port = env["ARBITER_PORT"], env["ARBITER_METRICS_PORT"]
    decision_id = ""
    promised = set()
    for line in quick_start():
        command = line.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
        command = command.replace("127.0.0.1:9464", f"127.0.0.1:{metrics_port}")
        command = command.replace("<decision_id>", decision_id)
        if " desk " in f"{command} ":
            printed = _desk(command, folder, env)
        else:
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            printed = done.stdout + done.stderr
            assert done.returncode == 0, f"{line}\n{printed}"
        for part, shows in PROMISES.items():
            if part in line:
                assert shows in printed, f"{line}\n{printed}"
                promised.add(part)
        found = re.search(r"^decision (\S+)", printed, flags=re.M)
        if found:
            decision_id = found.group(1)
    assert promised == set(PROMISES)  # every promise met a line that keeps it


def _desk(command: str, folder: Path, env: dict[str, str]) -> str:
    """A command that serves until stopped: its first lines, once it says where."""
    with subprocess.Popen(
        ["bash", "-c", f"exec {command.split('#')[0]}"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as desk:
        assert desk.stdout is not None
        lines = []
        try:
            for line in desk.stdout:
                lines.append(line)
                if "http://" in line:
                    break
        finally:
            desk.terminate()
            desk.wait(timeout=30)
    printed = "".join(lines)
    assert f"http://127.0.0.1:{env['ARBITER_DESK_PORT']}" in printed, printed
    return printed
