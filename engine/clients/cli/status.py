"""`arbiter status`: is the service up, and what is it serving? Its health over gRPC, then
what its ``/metrics`` say: the model and catalog, the feature store (Redis) behind the
breaker, the workers, the online layer, the calls answered and degraded."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from engine.api.channel import open_channel
from engine.clients.cli.calls import client_settings, connection_arguments
from engine.clients.cli.command import Command

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _arguments(p: argparse.ArgumentParser) -> None:
    connection_arguments(p)
    p.add_argument(
        "--metrics",
        help="the service's /metrics, host:port (default: the target's host, port"
        " ARBITER_METRICS_PORT or 9464)",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def health(args: argparse.Namespace) -> str:
    """SERVING, NOT_SERVING, or why it did not answer."""
    with open_channel(client_settings(args)) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.RpcError as exc:
            return f"no answer ({exc.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def scrape(address: str) -> Samples | str:
    """Every sample of ``/metrics`` at ``address`` by name, or why it could not be read."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=3) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((dict(sample.labels), sample.value))
    return out


def summary(target: str, served: str, address: str, samples: Samples | str) -> dict[str, Any]:
    """What the health and the metrics say, by topic."""
    status: dict[str, Any] = {"service": target, "health": served, "metrics": address}
    if isinstance(samples, str):
        status["metrics_error"] = samples
        return status

    def one(name: str) -> float | None:
        values = [v for _, v in samples.get(name, [])]
        return max(values) if values else None

    for labels, value in samples.get("arbiter_model_info", []):
        if value == 1:
            status[labels["role"]] = {"model": labels["model"], "catalog": labels["catalog"]}
    breaker = one("arbiter_breaker_open")
    status["redis"] = (
        None if breaker is None else ("down: breaker open" if breaker else "reachable")
    )
    status["workers"] = one("arbiter_workers")
    status["layer"] = {
        "publication": one("arbiter_adaptive_layer_version"),
        "age_seconds": one("arbiter_adaptive_layer_age_seconds"),
        "learner_up": one("arbiter_adaptive_learner_up"),
    }
    calls = samples.get("arbiter_rpc_seconds_count", [])
    status["decisions"] = sum(v for labels, v in calls if labels.get("method") == "Decide")
    status["degraded"] = sum(v for _, v in samples.get("arbiter_degraded_answers_total", []))
    return status


def _print(status: dict[str, Any]) -> None:
    print(f"service     {status['service']}: {status['health']}")
    if "metrics_error" in status:
        where, why = status["metrics"], status["metrics_error"]
        print(
            f"metrics     not read at http://{where}/metrics ({why});"
            " --metrics or ARBITER_METRICS_PORT names where they are"
        )
        return
    for role in ("champion", "challenger"):
        if role in status:
            print(f"{role:<11} model {status[role]['model']}, catalog {status[role]['catalog']}")
    print(f"redis       {status['redis'] or 'unknown'}")
    workers = status["workers"]
    print(f"workers     {int(workers) if workers is not None else 'unknown'}")
    layer = status["layer"]
    if layer["publication"]:
        up = "learner up" if layer["learner_up"] else "learner DOWN: serving the last posteriors"
        age = layer["age_seconds"]
        print(
            f"online      publication {int(layer['publication'])}, learnt {age:.0f} s ago, {up}"
            if age is not None
            else f"online      publication {int(layer['publication'])}, {up}"
        )
    else:
        print("online      no publication yet: the models' priors")
    print(
        f"decisions   {int(status['decisions']):,} answered, {int(status['degraded']):,} degraded"
    )
    print(f"metrics     http://{status['metrics']}/metrics")


def _run(args: argparse.Namespace) -> int:
    settings = client_settings(args)
    target = settings.target
    port = settings.metrics_port or 9464  # "off" on the server: say where it was looked for
    metrics = args.metrics or f"{target.rpartition(':')[0]}:{port}"
    served = health(args)
    status = summary(target, served, metrics, scrape(metrics))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print(status)
    return 0 if served == "SERVING" else 1


COMMAND = Command(
    "status",
    "is the service up, and what is it serving (health, model, Redis, workers, metrics)",
    _arguments,
    _run,
)
