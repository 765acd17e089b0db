"""The command table: each command declares its arguments and its run function; ``main``
parses, sets up logging and prints the project's errors as one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydantic
from pydantic_settings import BaseSettings

from common import logs
from common.errors import ArbiterError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbiter", description="Arbiter decision engine")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for command in commands:
        command.arguments(sub.add_parser(command.name, help=command.help))
    return p


def pairs(values: list[str], flag: str) -> dict[str, str]:
    """``["k=v", ...]`` from a repeated ``--flag k=v`` option."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects key=value, got {item!r}")
        out[key] = value
    return out


def main(commands: Sequence[Command], argv: list[str] | None = None) -> int:
    # Single-threaded numerics: threads add no throughput under load and fight the
    # server for the cores. Must be set before lightgbm/numpy start their pools.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = parser(commands).parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    run = {c.name: c.run for c in commands}[args.command]
    try:
        code = run(args)
        sys.stdout.flush()  # here, where a reader that has gone is handled
        return code
    except ArbiterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except pydantic.ValidationError as exc:  # a setting from the environment, mistyped
        for line in _settings_errors(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Piped into `head`: stop quietly, as other command-line tools do. (Not by
        # SIGPIPE's default action: that would also kill this process for a write to a
        # pipe of its own, such as a loading process's that has left.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the exit's flush then writes nowhere
        return 141  # what a shell reports for a writer stopped by SIGPIPE
    except OSError as exc:  # a full disk, a missing file: what and where, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


_SECRET = ("key", "secret", "token", "password")


def _settings_errors(exc: pydantic.ValidationError) -> list[str]:
    """One line per bad setting, named as it is set (the environment variable), with
    the value given unless it may be a secret."""
    prefix = next(
        (
            str(c.model_config.get("env_prefix", ""))
            for c in _subclasses(BaseSettings)
            if c.__name__ == exc.title
        ),
        "",
    )
    out = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        given = error.get("input")
        hidden = any(word in name.lower() for word in _SECRET) or isinstance(given, dict)
        value = "" if hidden or given is None else f" (given {given!r})"
        out.append(f"{prefix}{name.upper()}: {error['msg']}{value}")
    return out


def _subclasses(cls: type[BaseSettings]) -> list[type[BaseSettings]]:
    out: list[type[BaseSettings]] = []
    for c in cls.__subclasses__():
        out += [c, *_subclasses(c)]
    return out
