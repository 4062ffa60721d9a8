"""Who may call what: bearer tokens with scopes, one check shared by every service.

Scopes (``Scope``): ``client`` runs inferences and reads (``/infer``, ``GET /models``, ``/targets``,
``/state``); ``admin`` changes the mesh (uploads, Q-table import/reset/transfer, ``/policy``, the
telemetry scenario); ``mesh`` is the decider talking to runners and telemetry (``/run``, model
pushes). A token grants the scopes it is configured with; ``admin`` and ``mesh`` each imply
``client`` (whoever may change or drive the mesh may read it); ``admin`` and ``mesh`` are separate,
so an operator's token cannot push a model past the decider's checks and the decider's token cannot
reset the Q-table.

Tokens come from ``AUTOSCALE_CLIENT_TOKEN`` / ``_ADMIN_TOKEN`` / ``_MESH_TOKEN`` and from
``AUTOSCALE_TOKENS_FILE``, a YAML or JSON file of named tokens::

    tokens:
      - {name: alice, token: "...", scopes: [client]}
      - {name: ops, token: "...", scopes: [admin]}

A scope that no token grants is **open**, and only while the service is bound to a loopback
address (``make run``, the tests): ``security_problems`` names what is missing for any other bind,
and ``Authenticator.for_service`` refuses to build (so the service refuses to start) with that
message. Requests for an open scope must also arrive on a loopback socket.

Routes declare their scope with one dependency, ``require(Scope.admin)``; a pure-ASGI fast path
calls ``authorize_asgi`` with the same arguments. Tokens are compared in constant time
(``hmac.compare_digest`` over the SHA-256 of every configured token, each one every time).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.types import Scope as AsgiScope

from services.common.errors import ApiError
from services.common.settings import Settings
from services.core.errors import AutoScaleError

MIN_TOKEN_CHARS = 16  # on a non-loopback bind: shorter tokens are refused as guessable


class Scope(StrEnum):
    client = "client"
    admin = "admin"
    mesh = "mesh"


IMPLIED: Mapping[Scope, frozenset[Scope]] = {
    Scope.client: frozenset({Scope.client}),
    Scope.admin: frozenset({Scope.admin, Scope.client}),
    Scope.mesh: frozenset({Scope.mesh, Scope.client}),
}
ENV_VARS: Mapping[Scope, str] = {s: f"AUTOSCALE_{s.value.upper()}_TOKEN" for s in Scope}


class InsecureConfiguration(ValueError):
    """The tokens do not allow the configured bind (or the tokens file is unusable)."""


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="who holds it: logs and the rate limiter use it")
    token: SecretStr
    scopes: list[Scope] = Field(min_length=1)


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller as the check saw it: ``anonymous`` on an open scope."""

    name: str
    scopes: frozenset[Scope]


ANONYMOUS = Principal("anonymous", frozenset())


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


@functools.lru_cache(maxsize=256)  # asked per request with this host's own few addresses
def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; 0.0.0.0 and any interface address are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def load_tokens_file(path: Path) -> list[TokenEntry]:
    """Parse ``AUTOSCALE_TOKENS_FILE``; ``InsecureConfiguration`` names the file and the field at fault."""
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return TokensFile.model_validate(raw).tokens
    except OSError as exc:
        raise InsecureConfiguration(f"AUTOSCALE_TOKENS_FILE={path}: cannot read it ({exc.strerror})") from None
    except (ValueError, yaml.YAMLError) as exc:  # ValidationError is a ValueError
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = ".".join(str(p) for p in detail["loc"]) if detail else ""
        reason = detail["msg"] if detail else str(exc).splitlines()[0]
        raise InsecureConfiguration(f"AUTOSCALE_TOKENS_FILE={path}: {where or 'file'}: {reason}") from None


def configured_tokens(settings: Settings) -> list[TokenEntry]:
    """Every token the settings define: the three variables, then the tokens file."""
    entries = [
        TokenEntry(name=scope.value, token=secret, scopes=[scope])
        for scope, secret in (
            (Scope.client, settings.client_token),
            (Scope.admin, settings.admin_token),
            (Scope.mesh, settings.mesh_token),
        )
        if secret.get_secret_value()
    ]
    if settings.tokens_file is not None:
        entries += load_tokens_file(settings.tokens_file)
    return entries


def security_problems(settings: Settings) -> list[str]:
    """What stops this configuration from starting: every scope needs a token unless bound to loopback."""
    try:
        entries = configured_tokens(settings)
    except InsecureConfiguration as exc:
        return [str(exc)]
    if is_loopback(settings.host):
        return []
    problems: list[str] = []
    granted = {s for e in entries for s in e.scopes}
    missing = [s for s in Scope if s not in granted]
    if missing:
        names = ", ".join(ENV_VARS[s] for s in missing)
        problems.append(
            f"AUTOSCALE_HOST={settings.host} is not a loopback address, so every scope needs a token: set {names} "
            "(or list them in AUTOSCALE_TOKENS_FILE); e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    short = [e.name for e in entries if len(e.token.get_secret_value()) < MIN_TOKEN_CHARS]
    if short:
        problems.append(f"tokens shorter than {MIN_TOKEN_CHARS} characters on a non-loopback bind: {', '.join(short)}")
    return problems


def _unauthorized(message: str, error: str | None = None) -> ApiError:
    challenge = 'Bearer realm="autoscale"' + (f', error="{error}"' if error else "")
    return ApiError(401, "unauthorized", message, field="authorization", headers={"WWW-Authenticate": challenge})


class Authenticator:
    """The tokens of one service and the scope check every route and fast path goes through."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        listed = list(entries)
        self._entries = [(e.name, _digest(e.token.get_secret_value()), frozenset(e.scopes)) for e in listed]
        self._mesh = next((e.token for e in listed if Scope.mesh in e.scopes), None)
        self.open_scopes = frozenset(s for s in Scope if not any(s in scopes for _, _, scopes in self._entries))

    @classmethod
    def for_service(cls, settings: Settings) -> Authenticator:
        """The service's authenticator; ``InsecureConfiguration`` (with what to set) instead of an open mesh."""
        problems = security_problems(settings)
        if problems:
            raise InsecureConfiguration("; ".join(problems))
        return cls(configured_tokens(settings))

    def mesh_token(self) -> str:
        """What the decider sends to runners and telemetry ("" when the mesh scope is open)."""
        return self._mesh.get_secret_value() if self._mesh else ""

    def identify(self, authorization: str | None) -> Principal | None:
        """The principal a ``Bearer`` header names, or None; every token is compared, every time."""
        if not authorization or not self._entries:
            return None
        kind, _, presented = authorization.partition(" ")
        if kind.lower() != "bearer" or not presented:
            return None
        digest = _digest(presented.strip())
        name, scopes = "", frozenset[Scope]()
        for entry_name, expected, granted in self._entries:
            if hmac.compare_digest(digest, expected):
                name = name or entry_name
                scopes |= frozenset(s for g in granted for s in IMPLIED[g])
        return Principal(name, scopes) if name else None

    def authorize(self, authorization: str | None, needed: Scope, *, local_loopback: bool) -> Principal:
        """The caller if it may use ``needed``; else 401 (no or unknown token) or 403 (token without the scope)."""
        principal = self.identify(authorization)
        if principal is not None and needed in principal.scopes:
            return principal
        if principal is None and needed in self.open_scopes and local_loopback:
            return ANONYMOUS
        if principal is None and authorization:
            raise _unauthorized(f"unknown bearer token; the {needed.value} scope is needed", "invalid_token")
        if principal is None:
            raise _unauthorized(f"send Authorization: Bearer <token> of the {needed.value} scope")
        raise ApiError(
            403,
            "forbidden",
            f"this token does not grant the {needed.value} scope (it grants {', '.join(sorted(principal.scopes))})",
            field="authorization",
            headers={"WWW-Authenticate": f'Bearer realm="autoscale", error="insufficient_scope", scope="{needed}"'},
        )


def header(scope: AsgiScope, name: bytes) -> str | None:
    """One request header of an ASGI scope (``name`` lower-case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def arrived_on_loopback(scope: AsgiScope) -> bool:
    """Whether the request came in on a loopback socket (a Unix socket counts as local)."""
    server = scope.get("server")
    return server is None or is_loopback(str(server[0]))


def authorize_asgi(auth: Authenticator, scope: AsgiScope, needed: Scope) -> Principal:
    """``Authenticator.authorize`` for a pure-ASGI path (raises the same 401/403 ``ApiError``)."""
    return auth.authorize(header(scope, b"authorization"), needed, local_loopback=arrived_on_loopback(scope))


def client_key(auth: Authenticator, scope: AsgiScope) -> str:
    """Who a request counts against for rate limiting: its token's name, else its address."""
    principal = auth.identify(header(scope, b"authorization"))
    if principal is not None:
        return f"token:{principal.name}"
    client = scope.get("client")
    return f"addr:{client[0] if client else 'local'}"


# Declared on every secured route so that the OpenAPI schema shows the bearer scheme.
_bearer = HTTPBearer(auto_error=False, description="a token of the route's scope (see the README's Security)")


def require(needed: Scope, refusal: Callable[[AutoScaleError], Exception] | None = None) -> Any:
    """The dependency a route or router declares: ``dependencies=[require(Scope.admin)]``.

    Reads the app's ``Authenticator`` from ``app.state.auth`` and stores the caller in
    ``request.state.principal``. ``refusal`` wraps a 401/403 for routes that answer in another
    protocol's error shape (the Open Inference Protocol's), whose handler then writes it."""

    async def check(request: Request, _: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        try:
            principal = authorize_asgi(request.app.state.auth, request.scope, needed)
        except AutoScaleError as exc:
            if refusal is None:
                raise
            raise refusal(exc) from exc
        request.state.principal = principal
        return principal

    check.__name__ = f"require_{needed.value}"
    dep: DependsParam = Depends(check)
    return dep
