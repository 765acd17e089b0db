"""The agent desktop: a reference web page for call-center agents, and the HTTP front
that serves it and calls the gRPC service (Starlette on uvicorn).
(Over 400 lines: the routes, the sign-in and the error pages of one small app.)

    arbiter desk            (http://127.0.0.1:8080, calling the service at 127.0.0.1:50051)

Not an open door:
- agents sign in: with no agents file, the desk prints a one-time sign-in link (a token
  that works once, within 15 minutes, then is dead; each use prints the next one in the
  desk's terminal); with ``ARBITER_DESK_AGENTS_FILE`` (TOML ``[[agent]]`` with
  ``id`` and the ``sha256`` of its secret), a sign-in form. A session cookie (HttpOnly,
  SameSite=Strict) follows; outcomes record the agent (``reported_by``);
- a POST needs the session's CSRF token in ``X-CSRF-Token`` and, when the browser says
  where it comes from, this origin;
- only the configured host names are served (DNS rebinding);
- every response carries a CSP, X-Frame-Options: DENY and nosniff;
- the desk calls the service with its own key, over TLS when configured.

The page (static/index.html, desk.js, desk.css) writes every value with ``textContent``:

    GET  /api/session                                   who is signed in, the CSRF token
    GET  /api/profile?customer_id=C                     GetProfile
    GET  /api/decide?customer_id=C&channel=call_center  Decide (explain, 3 actions)
    POST /api/outcome  {decision_id, customer_id, offer_id, outcome}   ReportOutcome
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import secrets
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import grpc
import uvicorn
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from common.errors import ConfigurationError
from common.vocabulary import CHANNELS, OUTCOMES
from engine.api import proto
from engine.api.channel import open_channel
from engine.settings import ClientSettings, DeskSettings

STATIC = Path(__file__).parent / "static"
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BadRequest(Exception):
    pass


def load_agents(path: Path) -> dict[str, bytes]:
    """Agent id -> sha256 of its secret, from a TOML file of ``[[agent]]`` entries."""
    try:
        doc = tomllib.loads(path.read_text())
        agents = {str(a["id"]): bytes.fromhex(a["sha256"]) for a in doc.get("agent", [])}
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"agents file {path}: [[agent]] entries with id and sha256"
        ) from exc
    if not agents or any(len(d) != 32 for d in agents.values()):
        raise ConfigurationError(f"agents file {path}: sha256 is 64 hex digits")
    return agents


class Desk:
    """The gRPC side: turns the page's calls into calls to the service."""

    def __init__(self, client: ClientSettings) -> None:
        self.channel = open_channel(client)
        self.decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.profiles = profile_pb2_grpc.ProfileServiceStub(self.channel)

    def profile(self, query: dict[str, str], agent: str) -> Message:
        return self.profiles.GetProfile(
            profile_pb2.GetProfileRequest(customer_id=query.get("customer_id", "")), timeout=5
        )

    def decide(self, query: dict[str, str], agent: str) -> Message:
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

    def outcome(self, body: dict[str, Any], agent: str) -> Message:
        outcome = str(body.get("outcome", ""))
        if outcome not in OUTCOMES:
            raise BadRequest(f"outcome: one of {list(OUTCOMES)}")
        return self.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id=str(body.get("decision_id", "")),
                customer_id=str(body.get("customer_id", "")),
                offer_id=str(body.get("offer_id", "")),
                outcome=proto.outcome(outcome),
                reported_by=agent,
            ),
            timeout=5,
        )

    def close(self) -> None:
        self.channel.close()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _page_error(status: int, title: str, message: str) -> HTMLResponse:
    """An error a browser shows: a page in the desk's style, not JSON."""
    body = PAGE_ERROR.format(title=html.escape(title), message=html.escape(message))
    return HTMLResponse(body, status_code=status)


PAGE_ERROR = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Arbiter · {title}</title>
<link rel="stylesheet" href="/static/desk.css"></head>
<body><section class="login"><h1>{title}</h1><p>{message}</p></section></body></html>
"""


class SignInLinks:
    """One-time sign-in links: a token works once, within ``ttl`` seconds, and is then
    dead; each use or expiry makes the next one, which ``announce`` tells the person who
    started the desk (its console), never the browser. So a link that leaked into a
    history, a proxy log or a screenshot signs nobody in."""

    def __init__(self, announce: Callable[[str], None], ttl: float = 15 * 60) -> None:
        self._announce, self._ttl = announce, ttl
        self._lock = threading.Lock()
        self._token, self._expires = "", 0.0
        self.next()

    @property
    def token(self) -> str:
        return self._token

    def next(self) -> str:
        self._token, self._expires = secrets.token_urlsafe(24), time.monotonic() + self._ttl
        return self._token

    def use(self, offered: str) -> str:
        """ "ok", "expired" or "invalid"; "ok" and "expired" make the next token."""
        with self._lock:
            if not hmac.compare_digest(offered.encode(), self._token.encode()):
                return "invalid"
            fresh = time.monotonic() < self._expires
            self._announce(self.next())
            return "ok" if fresh else "expired"


def _signed_in(request: Request) -> str | None:
    agent = request.session.get("agent")
    return agent if isinstance(agent, str) else None


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True  # no browser said where it came from: the CSRF token decides
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _with_customer(path: str, customer: str) -> str:
    return f"{path}?{urlencode({'customer': customer})}" if customer else path


def _sign_in(request: Request, agent: str, customer: str = "") -> RedirectResponse:
    """A new session (a fresh CSRF token), and on to the page: the customer the link or
    form named is kept, the token is not (it leaves the address bar)."""
    request.session.clear()
    request.session.update({"agent": agent, "csrf": secrets.token_urlsafe(24)})
    return RedirectResponse(_with_customer("/", customer), status_code=303)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response


class DeskApp:
    """The routes. Exactly one of ``token`` (sign in with the printed URL) and ``agents``
    (sign in with a secret) is set."""

    def __init__(
        self, desk: Desk, links: SignInLinks | None, agents: dict[str, bytes] | None
    ) -> None:
        self.desk = desk
        self.links = links
        self.agents = agents

    async def index(self, request: Request) -> Response:
        offered = request.query_params.get("token")
        customer = request.query_params.get("customer", "")
        if self.links is not None and offered is not None:
            used = self.links.use(offered)
            if used == "ok":
                return _sign_in(request, "agent", customer)
            if used == "expired":
                return _page_error(
                    401,
                    "Sign-in link expired",
                    "That sign-in link was older than 15 minutes. `arbiter desk` has printed"
                    " a new one in its terminal: open that.",
                )
            return _page_error(
                401,
                "Sign-in link not valid",
                "That sign-in link has been used or was never valid: each works once."
                " Open the latest one `arbiter desk` printed in its terminal.",
            )
        if _signed_in(request) is None:
            if self.agents is not None:
                return RedirectResponse(_with_customer("/login", customer), status_code=303)
            return _page_error(
                401,
                "Not signed in",
                "Open the sign-in link `arbiter desk` printed in its terminal.",
            )
        return FileResponse(STATIC / "index.html")

    async def login(self, request: Request) -> Response:
        if self.agents is None:
            return _page_error(
                404, "No sign-in form", "Sign in with the link `arbiter desk` printed."
            )
        if request.method == "GET":
            return FileResponse(STATIC / "login.html")
        if not _same_origin(request):
            return _page_error(403, "Sign-in refused", "A sign-in from another site is refused.")
        form = await request.form()
        agent, secret = str(form.get("agent", "")), str(form.get("secret", ""))
        digest = hashlib.sha256(secret.encode()).digest()
        if not hmac.compare_digest(digest, self.agents.get(agent, b"\0" * 32)):
            await asyncio.sleep(0.2)  # a guess costs time
            return _page_error(401, "Not signed in", "Unknown agent or wrong secret.")
        return _sign_in(request, agent, request.query_params.get("customer", ""))

    async def session(self, request: Request) -> Response:
        agent = _signed_in(request)
        if agent is None:
            return _error(401, "UNAUTHENTICATED", "not signed in")
        return JSONResponse({"agent": agent, "csrf": request.session["csrf"]})

    def api(
        self, call: Callable[[Any, str], Message], *, post: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint that calls the service as the signed-in agent; a POST also needs
        the session's CSRF token and this origin."""

        async def endpoint(request: Request) -> Response:
            agent = _signed_in(request)
            if agent is None:
                return _error(401, "UNAUTHENTICATED", "not signed in")
            argument: Any = dict(request.query_params)
            if post:
                expected = str(request.session.get("csrf", ""))
                offered = request.headers.get("x-csrf-token", "")
                if not _same_origin(request) or not hmac.compare_digest(offered, expected):
                    return _error(403, "PERMISSION_DENIED", "missing or wrong CSRF token")
                try:
                    argument = await request.json()
                except ValueError:
                    return _error(400, "INVALID_ARGUMENT", "the body must be JSON")
            return await self._call(call, argument if isinstance(argument, dict) else {}, agent)

        return endpoint

    async def _call(
        self, call: Callable[[Any, str], Message], argument: Any, agent: str
    ) -> Response:
        try:
            reply = await run_in_threadpool(call, argument, agent)
        except BadRequest as exc:
            return _error(400, "INVALID_ARGUMENT", str(exc))
        except grpc.RpcError as exc:
            return _error(STATUS.get(exc.code(), 502), exc.code().name, exc.details() or "")
        return JSONResponse(
            json_format.MessageToDict(
                reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        )


def create_app(
    desk: Desk,
    settings: DeskSettings,
    *,
    links: SignInLinks | None,
    agents: dict[str, bytes] | None,
) -> Starlette:
    routes = DeskApp(desk, links, agents)
    return Starlette(
        routes=[
            Route("/", routes.index),
            Route("/login", routes.login, methods=["GET", "POST"]),
            Route("/api/session", routes.session),
            Route("/api/profile", routes.api(desk.profile)),
            Route("/api/decide", routes.api(desk.decide)),
            Route("/api/outcome", routes.api(desk.outcome, post=True), methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts)),
            Middleware(
                SessionMiddleware,
                secret_key=secrets.token_urlsafe(32),  # sessions end with the process
                session_cookie="arbiter_desk",
                same_site="strict",
                https_only=False,
                max_age=12 * 3600,
            ),
        ],
    )


class DeskServer:
    """The desk on uvicorn in a background thread; ``port`` is the bound port."""

    def __init__(self, settings: DeskSettings, client: ClientSettings) -> None:
        self.desk = Desk(client)
        self.agents = load_agents(settings.agents_file) if settings.agents_file else None
        self.links = None if self.agents else SignInLinks(self._announce)
        app = create_app(self.desk, settings, links=self.links, agents=self.agents)
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = settings.host
        self.port = 0

    def start(self) -> DeskServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(f"the desk could not listen on {self.host}")
            time.sleep(0.02)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        return self

    @property
    def sign_in_url(self) -> str:
        """The sign-in form, or the one-time link that works now."""
        if self.links is None:
            return f"http://{self.host}:{self.port}/login"
        return self._link(self.links.token)

    def _link(self, token: str) -> str:
        return f"http://{self.host}:{self.port}/?token={token}"

    def _announce(self, token: str) -> None:
        if self.port:  # once listening; the first link is printed by serve_desk
            print(f"next one-time sign-in link:\n    {self._link(token)}", flush=True)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.desk.close()


def serve_desk(settings: DeskSettings, client: ClientSettings) -> None:
    server = DeskServer(settings, client).start()
    print(f"agent desktop, service {client.target}; sign in at:\n    {server.sign_in_url}")
    try:
        while server._thread.is_alive():
            server._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
