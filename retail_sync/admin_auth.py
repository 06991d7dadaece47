"""Authentication and roles of the admin listener (issue 13; README "Admin listener").

Named API tokens, each with scopes:

| scope      | grants                                                              |
|------------|---------------------------------------------------------------------|
| ``viewer`` | the GET views (orders, inventory, exceptions, audit, ...)           |
| ``operator``| actions: cancel, returns, exception replay, reconciliation jobs    |
| ``pii``    | customer names, emails, phones and addresses unmasked in views      |
| ``metrics``| ``GET /metrics`` on the admin listener                              |

Tokens come from ``RETAIL_SYNC_ADMIN_TOKENS`` and/or the file ``RETAIL_SYNC_ADMIN_TOKENS_FILE``
(a Docker/Kubernetes secret), both a JSON object ``{"name": {"token_sha256": "<64 hex>",
"scopes": ["viewer", ...]}}``: only the SHA-256 of a token is ever configured or held in memory
(``retail-sync admin-token create NAME --scopes viewer,operator`` makes a token and prints the
entry). A presented token is hashed and compared with every known hash by
``hmac.compare_digest`` (no early exit, so timing says nothing about which or how much matched).
The file is re-read when its modification time, size or inode changes (checked at most every
``RELOAD_CHECK_S`` per request), so tokens are added, rotated and revoked without a restart; a
file that no longer parses keeps the last good tokens in force and is logged as an error.

Views use ``@requires(scope)`` on their ``get``/``post`` methods; it answers 401 (no or unknown
token, ``WWW-Authenticate: Bearer``), 403 (the token lacks the scope) and, for POST/PUT/PATCH/
DELETE, 415 unless ``Content-Type: application/json``. There is no cookie or session auth: a
browser on a foreign site can neither attach the token nor send ``application/json`` cross-site
without a CORS preflight, which this listener never grants, so no cross-site request forgery.
``principal_of(request)`` is the caller (its ``name`` is who, for audit records).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SCOPES = ("viewer", "operator", "pii", "metrics")
#: methods that change state: they also need ``Content-Type: application/json``
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: how often (seconds) a request may cause a stat() of the tokens file
RELOAD_CHECK_S = 0.5
#: prefix of tokens made by ``new_token`` (recognisable in a leaked-secret scan)
TOKEN_PREFIX = "rsat_"  # noqa: S105 - a prefix, not a secret
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
#: request key under which ``requires`` stores the caller
PRINCIPAL_KEY = "retail_sync.admin_principal"
#: attribute of the Faust app holding its ``TokenStore``
_STORE_ATTR = "_retail_sync_token_store"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's name and its scopes."""

    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a token, as configured (tokens are 256-bit random: no salt needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_entry(name: str, scopes: list[str] | tuple[str, ...] | frozenset[str],
                token: str) -> dict[str, dict[str, Any]]:
    """The configuration entry for ``token`` (what goes into ADMIN_TOKENS or the file)."""
    entry = {name: {"token_sha256": hash_token(token), "scopes": sorted(set(scopes))}}
    parse_tokens(orjson.dumps(entry).decode())  # validates name and scopes
    return entry


@dataclass(frozen=True)
class _Known:
    name: str
    digest: bytes
    scopes: frozenset[str]


def parse_tokens(text: str, origin: str = "RETAIL_SYNC_ADMIN_TOKENS") -> list[_Known]:
    """Parse a tokens document; ValueError naming ``origin`` and the bad entry."""
    if not text.strip():
        return []
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{origin}: not JSON ({exc}); expected "
                         '{"name": {"token_sha256": "<64 hex>", "scopes": ["viewer"]}}') from None
    if not isinstance(doc, dict):
        raise ValueError(f"{origin}: must be a JSON object of name -> "
                         '{"token_sha256": ..., "scopes": [...]}')
    known = []
    for name, spec in doc.items():
        if not NAME_PATTERN.match(name):
            raise ValueError(f"{origin}: token name {name[:70]!r} must be 1-64 of "
                             "letters, digits and ._@- (starting with a letter or digit)")
        if not isinstance(spec, dict) or set(spec) - {"token_sha256", "scopes", "note"}:
            raise ValueError(f"{origin}: token {name!r} must be "
                             '{"token_sha256": "<64 hex>", "scopes": [...]} (and an optional "note")')
        digest = spec.get("token_sha256")
        if not isinstance(digest, str) or not HASH_PATTERN.match(digest.lower()):
            raise ValueError(f"{origin}: token {name!r}: token_sha256 must be 64 hex digits, the "
                             "SHA-256 of the token (never the token itself)")
        scopes = spec.get("scopes")
        if (not isinstance(scopes, list) or not scopes
                or not all(isinstance(s, str) and s in SCOPES for s in scopes)):
            raise ValueError(f"{origin}: token {name!r}: scopes must be a non-empty list of "
                             f"{', '.join(SCOPES)}, not {str(scopes)[:80]}")
        known.append(_Known(name, bytes.fromhex(digest), frozenset(scopes)))
    return known


class TokenStore:
    """The known tokens (hashes) of one worker, from settings and an optional reloaded file."""

    def __init__(self, inline: str = "", file: Path | str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inline = parse_tokens(inline)
        self._file = Path(file) if file else None
        self._clock = clock
        self._file_tokens: list[_Known] = []
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self.reloads = 0
        self.reload_errors = 0
        if self._file is not None:
            self._file_tokens = self._read_file()  # at start a bad or missing file is fatal
        self._known = self._merge(self._file_tokens)

    @classmethod
    def from_settings(cls, settings: Any) -> TokenStore:
        inline = getattr(settings, "admin_tokens", "") or ""
        if hasattr(inline, "get_secret_value"):
            inline = inline.get_secret_value()
        return cls(inline, getattr(settings, "admin_tokens_file", None))

    @property
    def names(self) -> list[str]:
        return sorted(k.name for k in self._known)

    def _signature_of(self) -> tuple[int, int, int]:
        assert self._file is not None
        st = os.stat(self._file)  # follows symlinks: Kubernetes swaps a symlinked directory
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_file(self) -> list[_Known]:
        assert self._file is not None
        try:
            signature = self._signature_of()
            text = self._file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"RETAIL_SYNC_ADMIN_TOKENS_FILE {self._file}: cannot read it: "
                             f"{exc.strerror or exc}") from None
        origin = f"RETAIL_SYNC_ADMIN_TOKENS_FILE {self._file}"
        if not text.strip():  # also what a reader sees in the middle of an in-place rewrite
            self._signature = signature
            raise ValueError(f"{origin} is empty (write {{}} for no tokens)")
        tokens = parse_tokens(text, origin=origin)
        self._signature = signature
        return tokens

    def _merge(self, from_file: list[_Known]) -> list[_Known]:
        merged: dict[str, _Known] = {}
        for known in [*self._inline, *from_file]:
            if known.name in merged:
                raise ValueError(f"admin token name {known.name!r} is configured twice "
                                 "(RETAIL_SYNC_ADMIN_TOKENS and its file share one namespace)")
            merged[known.name] = known
        digests = [k.digest for k in merged.values()]
        if len(set(digests)) != len(digests):
            raise ValueError("two admin token names share one token_sha256: give each its own token")
        return list(merged.values())

    def maybe_reload(self) -> None:
        """Re-read the file when it changed (rate-limited to one stat per ``RELOAD_CHECK_S``)."""
        if self._file is None:
            return
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + RELOAD_CHECK_S
        try:
            signature = self._signature_of()
        except OSError as exc:
            if self._signature is not None:
                log.error("admin tokens file %s unreadable (%s): keeping the %d tokens last read",
                          self._file, exc.strerror or exc, len(self._known))
                self._signature = None
                self.reload_errors += 1
            return
        if signature == self._signature:
            return
        try:
            tokens = self._read_file()
            self._known = self._merge(tokens)
        except ValueError as exc:
            self._signature = signature  # logged once per change of the file
            self.reload_errors += 1
            log.error("admin tokens file not reloaded, keeping the %d tokens last read: %s",
                      len(self._known), exc)
            return
        self._file_tokens = tokens
        self.reloads += 1
        log.warning("admin tokens reloaded from %s: %s", self._file, ", ".join(self.names) or "none")

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal a presented token belongs to, or None. Constant time per known token."""
        self.maybe_reload()
        if not token:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: _Known | None = None
        for known in self._known:  # every entry is compared: no early exit
            if hmac.compare_digest(presented, known.digest):
                found = known
        return Principal(found.name, found.scopes) if found is not None else None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    value = headers.get("Authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def install(app: Any, store: TokenStore) -> None:
    """Make ``store`` the token store of a Faust app's admin views."""
    setattr(app, _STORE_ATTR, store)


def store_of(app: Any) -> TokenStore | None:
    return getattr(app, _STORE_ATTR, None)


def principal_of(request: Any) -> Principal | None:
    """The caller ``requires`` authenticated for this request (None on open views)."""
    try:
        principal: Principal | None = request.get(PRINCIPAL_KEY)
    except AttributeError:
        return None
    return principal


def has_scope(request: Any, scope: str) -> bool:
    """Whether the request's caller has ``scope`` (False when nobody authenticated)."""
    principal = principal_of(request)
    return principal is not None and scope in principal.scopes


def authorization_of(request: Any) -> dict[str, str]:
    """The caller's ``Authorization`` header as a dict, to forward on calls to another worker
    (which checks it again), or ``{}``."""
    value = request.headers.get("Authorization") if request is not None else None
    return {"Authorization": value} if value else {}


def _refusal(view: Any, status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    return view.bytes(orjson.dumps({"error": message}), content_type="application/json",
                      status=status, headers=headers or {})


def check(store: TokenStore | None, request: Any, scope: str) -> tuple[int, str, dict[str, str]] | Principal:
    """The principal, or (status, message, headers) of the refusal: 401, 403 or 415."""
    if store is None:
        return 401, "no admin tokens are configured on this worker", {"WWW-Authenticate": "Bearer"}
    token = bearer_token(request.headers)
    if token is None:
        return 401, ("authentication required: send Authorization: Bearer <token> "
                     f"(a token with the {scope!r} scope)"), {"WWW-Authenticate": "Bearer"}
    principal = store.authenticate(token)
    if principal is None:
        return 401, "unknown or revoked token", {
            "WWW-Authenticate": 'Bearer error="invalid_token"'}
    if scope not in principal.scopes:
        return 403, (f"token {principal.name!r} lacks the {scope!r} scope "
                     f"(it has {', '.join(sorted(principal.scopes))})"), {
            "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'}
    if request.method.upper() in STATE_CHANGING and request.content_type != "application/json":
        return 415, (f"{request.method} needs Content-Type: application/json, not "
                     f"{(request.content_type or 'none')[:60]!r}"), {}
    return principal


def requires(scope: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Decorate a Faust ``View`` method (``async def get/post(self, request, **kw)``): the
    request needs a token with ``scope`` (401/403), and state-changing methods JSON (415)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: one of {', '.join(SCOPES)}")

    def decorator(fun: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fun)
        async def guarded(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            outcome = check(store_of(view.app), request, scope)
            if not isinstance(outcome, Principal):
                status, message, headers = outcome
                return _refusal(view, status, message, headers)
            request[PRINCIPAL_KEY] = outcome
            return await fun(view, request, *args, **kwargs)

        guarded.required_scope = scope  # type: ignore[attr-defined]  # for docs and OpenAPI
        return guarded

    return decorator


__all__ = [
    "SCOPES",
    "Principal",
    "TokenStore",
    "authorization_of",
    "bearer_token",
    "has_scope",
    "hash_token",
    "install",
    "new_token",
    "parse_tokens",
    "principal_of",
    "requires",
    "store_of",
    "token_entry",
]
