"""How the processes log: text lines by default, JSON lines with ``ARBITER_LOG_FORMAT=json``
(one object a line: time, level, logger, message, process, and the ``request_id`` of the
call being served when its caller sent one in the ``x-request-id`` metadata)."""

from __future__ import annotations

import json
import logging
import os
from contextvars import ContextVar
from pathlib import Path

# The caller's request id for the call being served ("" outside a call, or when none).
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
FORMAT_ENV = "ARBITER_LOG_FORMAT"


class JsonLines(logging.Formatter):
    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if self._worker:
            line["worker"] = self._worker
        request_id = REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _WithRequestId(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = REQUEST_ID.get()
        return f"{text} [request {request_id}]" if request_id else text


def configure(level: int = logging.INFO, *, worker: str = "") -> None:
    """The root logger's one handler, in the format ``ARBITER_LOG_FORMAT`` asks for."""
    handler = logging.StreamHandler()
    if os.environ.get(FORMAT_ENV, "text").lower() == "json":
        handler.setFormatter(JsonLines(worker))
    else:
        where = f"[worker {worker} %(process)d] " if worker else ""
        handler.setFormatter(
            _WithRequestId(f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)


def to_file(path: Path, *, console: int = logging.WARNING) -> None:
    """Also writes every line to ``path``, and leaves only ``console`` and above on the
    console: a command printing a table of its own (simulate) keeps it readable."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setLevel(console)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = logging.FileHandler(path, mode="w")
    lines.setFormatter(_WithRequestId("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(lines)
