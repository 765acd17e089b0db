"""Bulk loading: all rows, fast, and never a half-written profile."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from common.errors import InvalidArgument
from engine.settings import Definitions
from feature_store import keys, loader
from feature_store.loader import load_file, load_profiles
from training.world import World, generate


def test_load_file_writes_every_profile(
    redis_client: redis.Redis, definitions: Definitions, world: World, tmp_path: Path
) -> None:
    path = tmp_path / "profiles.jsonl"
    world.write_profiles(path)

    report = load_file(redis_client, definitions.schema, path)

    assert report.rows == world.size
    assert len(redis_client.keys("arb:{cust-*}:profile")) == world.size
    meta = redis_client.hgetall(keys.LOAD_META)
    assert meta[b"rows"] == str(world.size).encode()
    cid, features, _ = world.profile(41)
    stored = redis_client.hget(keys.customer_key(cid, keys.PROFILE), "v")
    assert stored is not None
    expected = definitions.schema.encode_batch(features)
    assert stored == expected


def test_bad_lines_name_the_line(
    redis_client: redis.Redis, definitions: Definitions, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"customer_id": "ok-1", "features": {}}\n{"customer_id": "x", "features": {"bogus": 1}}\n'
    )
    with pytest.raises(InvalidArgument, match=r"features\.bogus"):
        load_file(redis_client, definitions.schema, path)
    path.write_text('{"customer_id": "ok-1"}\nnot json\n')
    with pytest.raises(InvalidArgument, match=r"bad\.jsonl:2"):
        load_file(redis_client, definitions.schema, path)
    for line, problem in [
        ('{"customer_id": "c", "attributes": {"first_name": 5}}', r":3: attributes\.first_name"),
        ('{"customer_id": "c", "features": {"tenure_months": "12"}}', r":3: features\.tenure"),
        ('{"customer_id": "c", "features": {"tenure_months": true}}', r":3: features\.tenure"),
        ('{"customer_id": "c", "features": [1, 2]}', r":3: features"),
        ('{"customer_id": 7}', r":3: customer_id"),
        ("[1, 2]", r":3"),
    ]:
        path.write_text(f'{{"customer_id": "ok-1"}}\n\n{line}\n')
        with pytest.raises(InvalidArgument, match=problem):
            load_file(redis_client, definitions.schema, path)
    # a bad line anywhere loads nothing, not the lines before it
    assert redis_client.exists("arb:{ok-1}:profile") == 0


def test_readers_never_see_a_half_written_profile(
    redis_client: redis.Redis, redis_url: str, definitions: Definitions
) -> None:
    schema = definitions.schema
    names = [f.name for f in schema.batch]
    old = {n: 1.0 for n in names}
    new = {n: 2.0 for n in names}
    ids = [f"c-{i}" for i in range(300)]
    load_profiles(redis_client, schema, [(c, old, {}) for c in ids])
    seen: set[tuple[float, ...]] = set()
    done = threading.Event()

    def read() -> None:
        reader = redis.Redis.from_url(redis_url)
        while not done.is_set():
            for blob in reader.mget([keys.customer_key(c, keys.PROFILE) for c in ids[:1]]):
                del blob
            for c in ids[::7]:
                vector = reader.hget(keys.customer_key(c, keys.PROFILE), "v")
                assert isinstance(vector, bytes)
                seen.add(tuple(np.unique(schema.decode_batch(vector)).tolist()))
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    for _ in range(5):
        load_profiles(redis_client, schema, [(c, new, {}) for c in ids], batch_size=50)
        load_profiles(redis_client, schema, [(c, old, {}) for c in ids], batch_size=50)
    done.set()
    thread.join()
    assert seen <= {(1.0,), (2.0,)}
    assert (2.0,) in seen or (1.0,) in seen


def test_a_parallel_load_writes_what_one_process_writes(
    redis_client: redis.Redis,
    definitions: Definitions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forked processes, each parsing its part of the file once: the same hashes as one
    process, a bad line in any part loads nothing and is named (the first of several)."""
    monkeypatch.setattr(loader, "PARALLEL_FROM_BYTES", 0)
    world = generate(600, seed=3)
    path = tmp_path / "profiles.jsonl"
    world.write_profiles(path)
    one = load_file(redis_client, definitions.schema, path, processes=1)
    names = sorted(redis_client.scan_iter(match="arb:*:profile"))

    def stored() -> dict[Any, dict[Any, Any]]:  # all but when: the loads' clocks differ
        return {k: {f: v for f, v in redis_client.hgetall(k).items() if f != b"u"} for k in names}

    alone = stored()
    redis_client.flushdb()
    three = load_file(redis_client, definitions.schema, path, processes=3)
    assert three.rows == one.rows == 600
    assert stored() == alone and all(redis_client.hexists(k, "u") for k in names)
    assert len(list(redis_client.scan_iter(match="arb:*:profile"))) == 600

    redis_client.flushdb()
    lines = path.read_text().splitlines()
    lines[249] = '{"customer_id": "c", "features": {"tenure_months": "x"}}'  # 2nd part
    lines[449] = "not json"  # 3rd part
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidArgument, match=r"profiles\.jsonl:250: features\.tenure"):
        load_file(redis_client, definitions.schema, path, processes=3)
    assert redis_client.dbsize() == 0  # the good parts wrote nothing


def test_a_bad_line_in_a_parallel_load_is_reported_where_sigpipe_kills(
    redis_url: str, definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose SIGPIPE has its default action (as a shell pipeline's tools do)
    gets the bad line's error, not a death by broken pipe for writing to the loading
    process that found the line and has left. (Run in a forked child: a death there is
    a failed assertion here, not the end of the test run.)"""
    monkeypatch.setattr(loader, "PARALLEL_FROM_BYTES", 0)
    path = tmp_path / "profiles.jsonl"
    generate(600, seed=3).write_profiles(path)
    lines = path.read_text().splitlines()
    lines[449] = "not json"  # the third part's: the first two check theirs and wait
    path.write_text("\n".join(lines) + "\n")

    pid = os.fork()
    if pid == 0:  # the child: leaves only by os._exit, never through pytest's teardown
        code = 3
        try:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            client = redis.Redis.from_url(redis_url)
            for _ in range(5):  # the worker that found the line leaves at once: each round
                try:
                    load_file(client, definitions.schema, path, processes=3)
                except InvalidArgument as exc:
                    code = 0 if "profiles.jsonl:450" in str(exc) else 4
                    if code:
                        break
                else:
                    code = 5
                    break
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # -13: killed by SIGPIPE
