"""The agent desktop: a reference web page for call-center agents, and the small HTTP
front that serves it and calls the gRPC service.

    arbiter desk            (http://127.0.0.1:8080, calling the service at 127.0.0.1:50051)

Standard library HTTP (a threaded server: one agent, one request at a time) and the sync
gRPC stubs; the page is static HTML and JavaScript (engine/clients/desk.html) that calls:

    GET  /api/profile?customer_id=C                     GetProfile
    GET  /api/decide?customer_id=C&channel=call_center  Decide (explain, 3 actions)
    POST /api/outcome  {decision_id, customer_id, offer_id, outcome}   ReportOutcome
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from common.vocabulary import CHANNELS, OUTCOMES
from engine.api import proto
from engine.api.channel import open_channel
from engine.settings import ClientSettings, DeskSettings

PAGE = Path(__file__).parent / "desk.html"
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.CONFLICT,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
}


class BadRequest(Exception):
    pass


class Desk:
    """The HTTP front: turns the page's calls into gRPC calls."""

    def __init__(self, client: ClientSettings) -> None:
        self.channel = open_channel(client)
        self.decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.profiles = profile_pb2_grpc.ProfileServiceStub(self.channel)

    def profile(self, query: dict[str, str]) -> Message:
        return self.profiles.GetProfile(
            profile_pb2.GetProfileRequest(customer_id=query.get("customer_id", "")), timeout=5
        )

    def decide(self, query: dict[str, str]) -> Message:
        channel = query.get("channel", "call_center")
        if channel not in CHANNELS:
            raise BadRequest(f"channel: one of {list(CHANNELS)}")
        return self.decisions.Decide(
            decision_pb2.DecideRequest(
                customer_id=query.get("customer_id", ""),
                channel=proto.channel(channel),
                placement="agent_sidebar",
                limit=3,
                explain=True,
                context={"device": "agent_desktop"},
            ),
            timeout=5,
        )

    def outcome(self, body: dict[str, Any]) -> Message:
        outcome = str(body.get("outcome", ""))
        if outcome not in OUTCOMES:
            raise BadRequest(f"outcome: one of {list(OUTCOMES)}")
        return self.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id=str(body.get("decision_id", "")),
                customer_id=str(body.get("customer_id", "")),
                offer_id=str(body.get("offer_id", "")),
                outcome=proto.outcome(outcome),
            ),
            timeout=5,
        )

    def close(self) -> None:
        self.channel.close()


class DeskHandler(BaseHTTPRequestHandler):
    """Routes the page and its API calls; ``desk`` is set on a subclass per server."""

    desk: Desk

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _call(self, fn: Any, arg: Any) -> None:
        try:
            reply = fn(arg)
        except BadRequest as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "INVALID_ARGUMENT", "message": str(exc)})
            return
        except grpc.RpcError as exc:
            status = STATUS.get(exc.code(), HTTPStatus.BAD_GATEWAY)
            self._json(status, {"error": exc.code().name, "message": exc.details()})
            return
        self._json(
            HTTPStatus.OK,
            json_format.MessageToDict(
                reply,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            ),
        )

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif url.path == "/api/profile":
            self._call(self.desk.profile, query)
        elif url.path == "/api/decide":
            self._call(self.desk.decide, query)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "NOT_FOUND", "message": url.path})

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/api/outcome":
            self._json(HTTPStatus.NOT_FOUND, {"error": "NOT_FOUND", "message": self.path})
            return
        length = min(int(self.headers.get("Content-Length", "0") or 0), 65536)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(
                HTTPStatus.BAD_REQUEST, {"error": "INVALID_ARGUMENT", "message": "JSON body"}
            )
            return
        self._call(self.desk.outcome, body if isinstance(body, dict) else {})


class DeskServer:
    """The desk's HTTP server in a background thread; ``port`` is the bound port."""

    def __init__(self, host: str, port: int, client: ClientSettings) -> None:
        self.desk = Desk(client)
        handler = type("BoundDeskHandler", (DeskHandler,), {"desk": self.desk})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> DeskServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.desk.close()


def serve_desk(settings: DeskSettings, client: ClientSettings) -> None:
    server = DeskServer(settings.host, settings.port, client)
    print(f"agent desktop on http://{settings.host}:{server.port} (service {settings.target})")
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.desk.close()
