"""`arbiter export-logs`: the logs to Parquet by day, incrementally and exactly once, and
training from the dataset learns what training from Redis learns."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from feature_store.log_reader import read_logs
from tests.conftest import ServerThread, accept
from training import export
from training.retrain import train_from_export, train_from_logs
from training.settings import TrainerSettings


def decide_and_accept(server: ServerThread, customers: range) -> int:
    """Decisions for ``customers``, a quarter of them accepted; how many were made."""
    for n in customers:
        cid = f"cust-{n:06d}"
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=cid, channel=common_pb2.CHANNEL_WEB, limit=2),
            timeout=5,
        )
        if response.actions and n % 4 == 0:
            accept(server, response, cid)
    server.flush_log()
    return len(customers)


def ids(dest: Path, kind: str) -> list[tuple[int, str]]:
    """(shard, entry id) of every exported row: an entry id is unique within its shard."""
    table = ds.dataset(dest / kind, format="parquet", partitioning="hive").to_table(
        columns=["shard", "id"]
    )
    shards, entry_ids = table.column("shard").to_pylist(), table.column("id").to_pylist()
    return [(s, str(i)) for s, i in zip(shards, entry_ids, strict=True)]


def test_export_is_incremental_and_exact(
    server: ServerThread, loaded: redis.Redis, tmp_path: Path
) -> None:
    dest = tmp_path / "exported"
    made = decide_and_accept(server, range(1, 41))
    first = export.export_logs(loaded, dest, page=7)  # pages of 7: many files, many resumes
    assert first.rows == {"decisions": made, "outcomes": 10}
    again = export.export_logs(loaded, dest, page=7)
    assert again.rows == {"decisions": 0, "outcomes": 0} and again.files == 0

    more = decide_and_accept(server, range(41, 61))
    later = export.export_logs(loaded, dest, page=7)
    assert later.rows == {"decisions": more, "outcomes": 5}

    decisions, outcomes = read_logs(loaded)
    exported = ids(dest, "decisions")
    assert len(exported) == len(set(exported)) == made + more == len(decisions)
    assert len(ids(dest, "outcomes")) == len(outcomes) == 15
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert (dest / "decisions" / f"day={today}").is_dir()
    # The dataset reads back as the logs: the same decisions, in the same (time) order.
    assert [d["decision_id"] for d in export.exported_decisions(dest)] == [
        d["decision_id"] for d in decisions
    ]


def test_an_export_stopped_midway_resumes_without_duplicates(
    server: ServerThread, loaded: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "exported"
    made = decide_and_accept(server, range(1, 31))
    real = export._save_state
    saves = 0

    def dies_on_the_third_save(where: Path, state: Any) -> None:
        nonlocal saves
        saves += 1
        if saves == 3:  # the page's file is written, its id not yet saved
            raise KeyboardInterrupt
        real(where, state)

    monkeypatch.setattr(export, "_save_state", dies_on_the_third_save)
    with pytest.raises(KeyboardInterrupt):
        export.export_logs(loaded, dest, page=4)
    monkeypatch.setattr(export, "_save_state", real)
    export.export_logs(loaded, dest, page=4)

    exported = ids(dest, "decisions")
    assert len(exported) == len(set(exported)) == made


def test_training_from_the_export_learns_what_training_from_redis_learns(
    server: ServerThread, loaded: redis.Redis, tmp_path: Path
) -> None:
    decide_and_accept(server, range(1, 161))
    time.sleep(1.0)  # every decision is now older than its channel's reward window

    def settings(folder: str) -> TrainerSettings:
        return TrainerSettings(
            data_dir=tmp_path / folder,
            export_dir=tmp_path / "exported",
            reward_window_minutes={"web": 0.01},
            num_trees=20,
            min_holdout_decisions=50,
            compile_trees=False,
        )

    export.export_logs(loaded, settings("x").export_path)

    from_redis, joined_redis = train_from_logs(settings("redis"), loaded)
    from_export, joined_export = train_from_export(settings("export"), settings("x").export_path)
    # Both together: the export and Redis hold the same decisions, each trained on once.
    from_both, joined_both = train_from_logs(
        settings("both"), loaded, export=settings("x").export_path
    )

    assert joined_export == joined_redis and joined_export.used == 160
    assert from_export.model.model_text == from_redis.model.model_text  # same rows, same order
    assert from_export.model.training["source"] == "export"
    assert joined_both.used == 160 and joined_both.duplicates == 160
    assert from_both.model.model_text == from_redis.model.model_text
    assert from_both.model.training["source"] == "export+logs"
