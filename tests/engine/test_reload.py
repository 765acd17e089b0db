"""Live swap: a promoted model or an edited catalog is picked up without a restart and
without failing a call; an unusable one is refused and the service keeps serving."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from arbiter.v1 import common_pb2, decision_pb2
from engine.adapters import artifact
from engine.ops.admin import outcomes_by_model
from engine.settings import DEFAULTS
from feature_store.memory_store import MemoryStore
from tests.conftest import ServerThread, accept


@pytest.fixture
def data(model_dir: Path, tmp_path: Path) -> Path:
    """A data directory of its own, holding a copy of the trained model's registry."""
    shutil.copytree(model_dir, tmp_path / "data" / "models")
    return tmp_path / "data"


def decide(server: ServerThread) -> decision_pb2.DecideResponse:
    return server.decisions.Decide(
        decision_pb2.DecideRequest(
            customer_id="cust-000042", channel=common_pb2.CHANNEL_CALL_CENTER
        ),
        timeout=5,
    )


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_promoted_model_is_served_without_a_restart_or_a_failed_call(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, data: Path
) -> None:
    server = server_factory(memory, data_dir=data, reload_seconds=0.1)
    first = artifact.load(data / "models")
    assert decide(server).model_version == first.version

    failures: list[BaseException] = []
    versions: set[str] = set()
    stop = threading.Event()

    def steady_load() -> None:
        for _ in range(2000):  # bounded
            if stop.is_set():
                return
            try:
                versions.add(decide(server).model_version)
            except grpc.RpcError as exc:
                failures.append(exc)

    load = threading.Thread(target=steady_load)
    load.start()
    time.sleep(0.3)
    artifact.save(data / "models", dataclasses.replace(first, version="v-next"))
    wait_for(lambda: decide(server).model_version == "v-next")
    time.sleep(0.3)
    stop.set()
    load.join()

    assert failures == []
    assert versions == {first.version, "v-next"}
    assert server.reloader.reloads == 1


def test_an_unusable_model_is_refused_and_the_current_one_keeps_serving(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, data: Path
) -> None:
    server = server_factory(memory, data_dir=data)
    current = artifact.load(data / "models")
    features = ("shoe_size", *current.features[1:])
    artifact.save(data / "models", dataclasses.replace(current, version="v-bad", features=features))

    assert not server.run(server.reloader.check())
    assert decide(server).model_version == current.version


def test_an_edited_catalog_is_picked_up(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.toml"
    shutil.copy(DEFAULTS / "catalog.toml", catalog)
    server = server_factory(memory, catalog_path=catalog)
    before = decide(server)
    assert before.actions[0].offer_id == "fibre_broadband"

    text = catalog.read_text().replace(
        "Fibre 900 is now available in $region:", "Good news: fibre reached $region:"
    )
    catalog.write_text(text)
    assert server.run(server.reloader.check())

    after = decide(server)
    assert after.actions[0].message.agent_script.startswith("Good news: fibre reached")
    catalog.write_text("this is not TOML [")
    assert not server.run(server.reloader.check())
    assert decide(server).actions[0].message.agent_script.startswith("Good news")


def test_a_challenger_serves_a_stable_share_of_customers(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, data: Path
) -> None:
    champion = artifact.load(data / "models")
    artifact.save(
        data / "models", dataclasses.replace(champion, version="v-challenger"), promote=False
    )
    artifact.set_challenger(data / "models", "v-challenger", 0.3)
    server = server_factory(memory, data_dir=data)

    served: dict[str, str] = {}
    for n in range(1, 401):
        cid = f"cust-{n:06d}"
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(customer_id=cid, channel=common_pb2.CHANNEL_CALL_CENTER),
            timeout=5,
        )
        served[cid] = response.model_version
        if response.actions and n % 5 == 0:
            accept(server, response, cid)
    share = sum(v == "v-challenger" for v in served.values()) / len(served)
    assert 0.22 < share < 0.38
    assert set(served.values()) == {champion.version, "v-challenger"}
    for cid in list(served)[:30]:  # stable by customer id
        assert decide_for(server, cid).model_version == served[cid]

    server.flush_log()
    per_model = outcomes_by_model(server.read_decisions(), server.read_outcomes())
    assert sum(n for n, _ in per_model.values()) == sum(1 for _ in served) + 30
    assert sum(k for _, k in per_model.values()) == 80  # one accept in five
    assert set(per_model) == {champion.version, "v-challenger"}

    artifact.set_challenger(data / "models", None)
    assert server.run(server.reloader.check())
    assert {decide_for(server, cid).model_version for cid in list(served)[:30]} == {
        champion.version
    }


def decide_for(server: ServerThread, customer_id: str) -> decision_pb2.DecideResponse:
    return server.decisions.Decide(
        decision_pb2.DecideRequest(customer_id=customer_id, channel=common_pb2.CHANNEL_CALL_CENTER),
        timeout=5,
    )


def test_a_corrupt_promoted_model_does_not_stop_a_start(
    server_factory: Callable[..., ServerThread],
    memory: MemoryStore,
    data: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = artifact.load(data / "models")
    broken = dataclasses.replace(good, version="v-corrupt", model_text="not a model\n")
    artifact.save(data / "models", broken)  # promoted

    server = server_factory(memory, data_dir=data, reload_seconds=0.1)

    assert decide(server).model_version == good.version  # the last good one serves
    assert "SERVING " + good.version in caplog.text
    caplog.clear()
    time.sleep(0.5)  # several reload ticks: the refused model is not retried, nor logged
    assert "not reloading" not in caplog.text
    artifact.set_current(data / "models", good.version)  # an operator rolls back
    (data / "models" / "v-corrupt" / "model.txt").write_text("still not a model\n")
    assert decide(server).model_version == good.version


def test_with_no_usable_model_at_all_value_only_serves(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, data: Path
) -> None:
    good = artifact.load(data / "models")
    (data / "models" / good.version / "model.txt").write_text("corrupted on disk\n")

    assert decide(server_factory(memory, data_dir=data)).model_version == "value-only"
