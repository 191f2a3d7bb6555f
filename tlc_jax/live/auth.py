"""Who may call the HTTP API, and how often: API keys, scopes and rate limits.

A key (`tlc_jax.live.apikeys`) goes in `Authorization: Bearer <token>` or `X-API-Key`.
Writes need a key with the "write" scope; reads need a "read" key only with
`read_requires_key=True`. A missing or invalid key is a 401, a key without the scope a
403. Each key has a token bucket of `rate_per_min` requests (a minute's worth at once at
most); requests without a key, and requests with an invalid one, share one bucket per
client IP. An empty bucket is a 429 with Retry-After. The buckets live in the process's
memory: with N worker processes a key gets up to N times its rate.

    install(app, db, read_requires_key=False, anonymous_rate_per_min=300)
    router = APIRouter(route_class=KeyFirstRoute)
    @router.get("/devices", dependencies=READ)   # or WRITE, or ANYONE

`ANYONE` looks at no key, so it answers even when the database does not (health).

The key is checked before the request's body is read: a route of `KeyFirstRoute` runs
its rule (ANYONE / READ / WRITE) first, so a request without a valid key gets its 401
(or 403, 429) whatever its body holds - not a 422 or 400 that would tell a caller
without a key what the API accepts. The dependencies then see the rule done and do not
count the request twice (on a plain APIRoute they check the key themselves).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Annotated, Callable

from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tlc_jax.live import apikeys
from tlc_jax.live.db import Database


class RateLimiter:
    """Token buckets in memory, one per identity: each holds up to a minute's allowance
    and refills continuously. Thread-safe (sync endpoints run in a thread pool)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = 100_000):
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # identity: (tokens, time)
        self._lock = threading.Lock()

    def take(self, identity: str, rate_per_min: float) -> float:
        """Takes a token: 0.0, or else the seconds until one will be there."""
        capacity, per_s = float(rate_per_min), rate_per_min / 60.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(identity, (capacity, now))
            tokens = min(capacity, tokens + (now - then) * per_s)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / per_s
            self._buckets[identity] = (tokens - 1 if tokens >= 1 else tokens, now)
            if len(self._buckets) > self.max_buckets:
                self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        # Forget buckets idle for over a minute (they would be nearly full again).
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60.0}


@dataclasses.dataclass
class Access:
    """An app's rules of entry: where keys are looked up, whether reads need one, the
    rate of requests without a key, and the buckets."""

    db: Database
    read_requires_key: bool
    anonymous_rate_per_min: int
    limiter: RateLimiter


def install(app: FastAPI, db: Database, *, read_requires_key: bool = False,
            anonymous_rate_per_min: int = 300,
            clock: Callable[[], float] = time.monotonic) -> None:
    """Makes `app`'s ANYONE / READ / WRITE dependencies follow these rules (keys from
    `db`, rate limits timed by `clock`)."""
    app.state.access = Access(db=db, read_requires_key=read_requires_key,
                              anonymous_rate_per_min=anonymous_rate_per_min,
                              limiter=RateLimiter(clock))


def _access(request: Request) -> Access:
    return request.app.state.access


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")


def _token(bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
           header: Annotated[str | None, Security(_header)]) -> str | None:
    return bearer.credentials if bearer is not None else header


def _limit(access: Access, identity: str, rate_per_min: float) -> None:
    wait = access.limiter.take(identity, rate_per_min)
    if wait > 0:
        raise HTTPException(429, "Too many requests: slow down.",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})


def _ip(request: Request) -> str:
    return f"ip:{request.client.host if request.client else 'unknown'}"


def _unauthorised(why: str) -> HTTPException:
    return HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})


def _authorise(request: Request, access: Access, token: str | None,
               needed: str | None) -> None:
    """Checks the key (if one is needed or given), its scope and its rate limit."""
    if token is None:
        _limit(access, _ip(request), access.anonymous_rate_per_min)
        if needed is not None:
            raise _unauthorised(f"An API key with the {needed!r} scope is needed "
                                f"(Authorization: Bearer <key>, or X-API-Key).")
        return
    with access.db.transaction() as session:
        key = apikeys.verify(session, token)
        found = (key.id, key.rate_per_min, tuple(key.scopes)) if key else None
    if found is None:
        # The client's address pays for the bad key: slows down key guessing.
        _limit(access, _ip(request), access.anonymous_rate_per_min)
        raise _unauthorised("Invalid or revoked API key.")
    key_id, rate, scopes = found
    _limit(access, f"key:{key_id}", rate)
    if needed is not None and not apikeys.allows(scopes, needed):
        raise HTTPException(403, f"This API key lacks the {needed!r} scope.")
    request.state.api_scopes = scopes


def allows(request: Request, needed: str) -> bool:
    """Whether the request's (verified) API key has the scope `needed`; False without
    a key. For endpoints whose rule depends on the body (folder devices need admin)."""
    return apikeys.allows(getattr(request.state, "api_scopes", ()), needed)


AccessRules = Annotated[Access, Depends(_access)]
Token = Annotated[str | None, Depends(_token)]


def _checked(request: Request) -> bool:
    """Whether KeyFirstRoute has applied the route's rule already."""
    return bool(getattr(request.state, "access_checked", False))


def _anyone(request: Request, access: AccessRules) -> None:
    """No key looked at (health must answer even when the database does not)."""
    if not _checked(request):
        _limit(access, _ip(request), access.anonymous_rate_per_min)


def _reader(request: Request, access: AccessRules, token: Token) -> None:
    if not _checked(request):
        _authorise(request, access, token, "read" if access.read_requires_key else None)


def _writer(request: Request, access: AccessRules, token: Token) -> None:
    if not _checked(request):
        _authorise(request, access, token, "write")


ANYONE = [Depends(_anyone)]
READ = [Depends(_reader)]
WRITE = [Depends(_writer)]
_RULES = {_anyone: "anyone", _reader: "read", _writer: "write"}


def rule(route: APIRoute) -> str | None:
    """"anyone", "read" or "write": the route's rule (its ANYONE / READ / WRITE
    dependency), or None without one."""
    for dependency in route.dependencies:
        if dependency.dependency in _RULES:
            return _RULES[dependency.dependency]
    return None


async def _token_of(request: Request) -> str | None:
    """The key as the `_token` dependency finds it (the same security schemes)."""
    bearer = await _bearer(request)
    return bearer.credentials if bearer is not None else await _header(request)


def _apply(request: Request, name: str, token: str | None) -> None:
    access = _access(request)
    if name == "anyone":
        _limit(access, _ip(request), access.anonymous_rate_per_min)
    else:
        needed = "write" if name == "write" else (
            "read" if access.read_requires_key else None)
        _authorise(request, access, token, needed)
    request.state.access_checked = True


class KeyFirstRoute(APIRoute):
    """An APIRoute that applies its rule (ANYONE / READ / WRITE) before FastAPI reads,
    parses and validates the body and parameters: no key, no 422."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        name = rule(self)
        if name is None:
            return handler

        async def key_first(request: Request) -> Response:
            token = await _token_of(request)
            # In a worker thread: the key's lookup is a database transaction.
            await run_in_threadpool(_apply, request, name, token)
            return await handler(request)

        return key_first
