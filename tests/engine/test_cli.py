"""The command line's manners: a reader that stops early (``| head``) ends it quietly."""

from __future__ import annotations

import subprocess
import sys

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
