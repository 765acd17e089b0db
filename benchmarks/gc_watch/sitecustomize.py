"""Loaded by every Python process started with this folder first on PYTHONPATH (the
servers of benchmarks/chaos/load.py's served soak): with ``ARBITER_BENCH_GC_LOG`` set, each
garbage collection of the process is written to ``<that path>.<pid>`` as a line
``<wall-clock start> <generation> <seconds>``, whatever the server's code (the same
instrument on this checkout and an older one, which has no GC metric). With
``ARBITER_BENCH_GC_FREEZE=off`` ``gc.freeze()`` does nothing: the server without its
start-up freeze, for a before and after of that tuning.

Python imports one ``sitecustomize``; this one then runs the one it shadows (Debian's)."""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import time

_path = os.environ.get("ARBITER_BENCH_GC_LOG")
if _path:
    _out = open(f"{_path}.{os.getpid()}", "w", buffering=1)  # noqa: SIM115 - lives with the process
    _started = [0.0, 0.0]

    def _watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0], _started[1] = time.time(), time.perf_counter()
        else:
            took = time.perf_counter() - _started[1]
            _out.write(f"{_started[0]:.6f} {info['generation']} {took:.6f}\n")

    gc.callbacks.append(_watch)

if os.environ.get("ARBITER_BENCH_GC_FREEZE") == "off":
    gc.freeze = lambda: None

_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:  # the sitecustomize this one shadows, if any
    if _entry and os.path.abspath(_entry) != _here:
        _found = os.path.join(_entry, "sitecustomize.py")
        if os.path.isfile(_found):
            _spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", _found)
            if _spec is not None and _spec.loader is not None:
                _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
            break
