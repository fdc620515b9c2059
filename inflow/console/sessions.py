"""Console logins: a random session id in an HttpOnly, SameSite=Strict cookie, mapped in memory to the
admin token that logged in. Every request checks the token again, so a revoked token logs out at once; a
console restart logs everyone out."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from inflow.console.tokens import AdminToken, TokenStore

COOKIE = "inflow_console"
MAX_SESSIONS = 10_000


@dataclass
class Session:
    name: str
    token_sha256: str
    expires: float


class Sessions:
    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._sessions: dict[str, Session] = {}

    def login(self, response: web.StreamResponse, token: AdminToken, secure: bool) -> None:
        now = time.monotonic()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(token.name, token.token_sha256, now + self.lifetime_s)
        response.set_cookie(
            COOKIE,
            sid,
            max_age=int(self.lifetime_s),
            httponly=True,
            samesite="Strict",
            secure=secure,
            path="/",
        )

    def logout(self, request: web.Request, response: web.StreamResponse) -> None:
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)
        response.del_cookie(COOKIE, path="/")

    def token_of(self, request: web.Request, tokens: TokenStore) -> AdminToken | None:
        """The live token behind the request's session cookie, else None."""
        session = self._sessions.get(request.cookies.get(COOKIE, ""))
        if session is None or session.expires < time.monotonic():
            return None
        for token in tokens.all():
            if (
                token.name == session.name
                and token.token_sha256 == session.token_sha256
                and not token.revoked
            ):
                return token
        return None
