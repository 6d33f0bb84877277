"""The API key a service asks for off loopback: one constant-time check for every route."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request

KeyCheck = Callable[[Request], None]


def key_check(api_key: str | None, basic_auth: bool = False) -> KeyCheck:
    """A check that answers 401 unless the request's ``X-API-Key`` header (or, with
    ``basic_auth``, the password of its HTTP basic auth, as Label Studio sends it) is
    ``api_key``, compared in constant time; without a key every request passes."""
    wanted = "basic auth password or X-API-Key" if basic_auth else "X-API-Key header"
    challenge = {"WWW-Authenticate": 'Basic realm="segkit"'} if basic_auth else None

    def check(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if basic_auth and auth.lower().startswith("basic "):
            given = base64.b64decode(auth[6:]).decode(errors="replace").split(":", 1)[-1]
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, f"missing or wrong key ({wanted})", headers=challenge)

    return check
