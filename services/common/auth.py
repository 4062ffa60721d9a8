"""The admin check every service shares: open without a token, else ``Authorization: Bearer``."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from services.core.errors import AutoScaleError


class Unauthorized(AutoScaleError):
    status = 401
    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__("admin endpoint: send Authorization: Bearer <AUTOSCALE_ADMIN_TOKEN>")


def check_admin(token: SecretStr, authorization: str) -> None:
    """Raise ``Unauthorized`` unless no token is configured (loopback default) or the header carries it."""
    secret = token.get_secret_value()
    # compare_digest: the time taken does not tell how much of the token matched.
    if secret and not hmac.compare_digest(authorization.encode(), f"Bearer {secret}".encode()):
        raise Unauthorized()
