"""The command line's manners: a reader that stops early (``| head``) ends it quietly."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis

from engine.clients.cli.calls import channel_name
from tests.conftest import ServerThread
from training.cli import main as cli_main

LONG_OUTPUT = """
import sys
from engine.clients.cli.command import Command, main

def run(_):
    for i in range(200_000):
        print(f"line {i}")
    return 0

sys.exit(main([Command("many", "prints many lines", lambda p: None, run)], ["many"]))
"""


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", LONG_OUTPUT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline() == "line 0\n"
        child.stdout.close()  # as `head -1` does
        errors = child.stderr.read()
        assert child.wait(timeout=60) == 141
    assert errors == ""  # no traceback, no "Exception ignored" at exit


def test_a_mistyped_setting_is_one_line_naming_the_variable() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "REDIS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "serve"],
        env={**clean, "ARBITER_LEARNER": "false", "ARBITER_PORT": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert "error: ARBITER_LEARNER: Input should be 'process' or 'off' (given 'false')" in lines
    assert any(
        line.startswith("error: ARBITER_PORT: Input should be a valid integer") for line in lines
    )


def test_one_channel_however_it_is_spelt() -> None:
    for spelt in ("call-center", "call_center", "CALL_CENTER", "CHANNEL_CALL_CENTER"):
        assert channel_name(spelt) == "call_center"
    assert channel_name("mobile-app") == "mobile_app"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown channel 'phone': one of web"):
        channel_name("phone")


def test_status_says_what_the_service_serves(
    server_factory: Callable[..., ServerThread],
    loaded: redis.Redis,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = server_factory(redis_url, metrics_port=0)
    target = f"127.0.0.1:{server.running.port}"
    metrics = f"127.0.0.1:{server.metrics_port}"
    assert cli_main(["status", "--target", target, "--metrics", metrics]) == 0
    lines = capsys.readouterr().out.splitlines()
    core = server.application.core
    assert lines[0] == f"service     {target}: SERVING"
    assert f"champion    model {core.scorer.version}, catalog {core.catalog.version}" in lines
    assert "redis       reachable" in lines
    assert f"metrics     http://{metrics}/metrics" in lines

    # no metrics where it looks: said, with where to look instead
    assert cli_main(["status", "--target", target, "--metrics", "127.0.0.1:1"]) == 0
    printed = capsys.readouterr().out
    assert "metrics     not read at http://127.0.0.1:1/metrics" in printed
    # no service: said, and a failing exit
    assert cli_main(["status", "--target", "127.0.0.1:1", "--metrics", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().out.startswith("service     127.0.0.1:1: no answer (UNAVAILABLE)")
