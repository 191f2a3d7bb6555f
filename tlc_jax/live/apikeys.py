"""Keys of the live system's HTTP API: create, verify, revoke, list.

A key is a random token (`tlc_` + 256 random bits, URL-safe base64) shown once, when it
is created. The database keeps only its SHA-256 (enough for a 256-bit random secret: no
dictionary to try, so no slow hash is needed) and its first characters, a non-secret
prefix that finds the row and tells keys apart in listings and logs.

Scopes: "read" (search devices, frames, predictions, counts), "write" (create, edit,
delete and import devices; implies "read") and "admin" (everything). Every function
works inside the caller's session; the caller commits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy import orm

from tlc_jax.live.db import ApiKeyRow

SCOPES = ("read", "write", "admin")
TOKEN_START = "tlc_"
PREFIX_CHARS = 12  # "tlc_" and 8 random characters (48 bits): identifies, never authorises.
MAX_TOKEN_CHARS = 200
MAX_NAME = 200
TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per key.


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked; the message says why."""


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """What a listing shows of a key: never its token nor its hash."""

    name: str
    prefix: str
    scopes: tuple[str, ...]
    rate_per_min: int
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def allows(scopes: Iterable[str], needed: str) -> bool:
    """Whether a key with `scopes` may do what needs `needed` ("admin" implies every
    scope, "write" implies "read")."""
    scopes = set(scopes)
    return (needed in scopes or "admin" in scopes
            or (needed == "read" and "write" in scopes))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _scopes(scopes: Iterable[str]) -> list[str]:
    if isinstance(scopes, str):
        scopes = [s for s in scopes.replace(",", " ").split() if s]
    scopes = set(scopes)
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise ApiKeyError(f"Scopes must be a non-empty subset of {', '.join(SCOPES)}; got "
                          f"{', '.join(sorted(scopes)) or 'none'}.")
    return [s for s in SCOPES if s in scopes]


def create_key(session: orm.Session, name: str, scopes: Iterable[str] = ("read",),
               rate_per_min: int = 600) -> str:
    """Stores a new key and returns its token: the only time the token is seen."""
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise ApiKeyError(f"A key's name must be 1-{MAX_NAME} printable characters.")
    if isinstance(rate_per_min, bool) or not isinstance(rate_per_min, int) \
            or rate_per_min < 1:
        raise ApiKeyError(f"rate_per_min must be a whole number >= 1; got {rate_per_min!r}.")
    scopes = _scopes(scopes)
    if session.scalar(sa.select(ApiKeyRow.id).where(ApiKeyRow.name == name)) is not None:
        raise ApiKeyError(f"A key named {name!r} exists already (names are never reused, "
                          f"revoked keys included).")
    token = TOKEN_START + secrets.token_urlsafe(32)
    session.add(ApiKeyRow(name=name, prefix=token[:PREFIX_CHARS], sha256=_digest(token),
                          scopes=scopes, rate_per_min=rate_per_min))
    session.flush()
    return token


def verify(session: orm.Session, token: str | None, *,
           now: float | None = None) -> ApiKeyRow | None:
    """The active key whose token this is, else None. The hash is compared in constant
    time; last_used_at is refreshed (at most once a minute)."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_START):
        return None
    digest = _digest(token)
    found = None
    for row in session.scalars(sa.select(ApiKeyRow).where(
            ApiKeyRow.prefix == token[:PREFIX_CHARS])):
        if hmac.compare_digest(row.sha256, digest):
            found = row
    if found is None or found.revoked_at is not None:
        return None
    now = time.time() if now is None else now
    if found.last_used_at is None or now - found.last_used_at >= TOUCH_EVERY_S:
        found.last_used_at = now
    return found


def revoke(session: orm.Session, name: str) -> bool:
    """Revokes the key named `name` at once; False if it was revoked already."""
    row = session.scalar(sa.select(ApiKeyRow).where(ApiKeyRow.name == name))
    if row is None:
        raise ApiKeyError(f"No key named {name!r}.")
    if row.revoked_at is not None:
        return False
    row.revoked_at = time.time()
    return True


def list_keys(session: orm.Session) -> list[KeyInfo]:
    """Every key, revoked ones included, by name."""
    return [KeyInfo(r.name, r.prefix, tuple(r.scopes), r.rate_per_min, r.created_at,
                    r.last_used_at, r.revoked_at)
            for r in session.scalars(sa.select(ApiKeyRow).order_by(ApiKeyRow.name))]
