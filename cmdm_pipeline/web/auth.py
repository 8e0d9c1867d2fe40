"""Who is asking: a logged-in person (session cookie, or a trusted proxy's header), or an API client (bearer token).

Passwords are checked against argon2 hashes; tokens by their SHA-256 compared in constant time with every
configured hash. Sessions hold the user's name, the login time (a login expires ``web.session_minutes``
after it, whatever the activity) and a CSRF token that every form and htmx POST must echo.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import HTTPException, Request

from cmdm_pipeline.config import WebConfig, WebUser

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
_HASHER = PasswordHasher()
# Checked when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def may_decide(self) -> bool:
        return self.role == "steward"


class AuthError(HTTPException):
    """401/403 with a message naming what is wrong (``login``, ``session``, ``token``, ``role``, ``csrf``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status_code=status, detail=message)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def new_token() -> tuple[str, str]:
    """A fresh bearer token and the SHA-256 hex that goes into ``cmdm.yaml``."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_password(web: WebConfig, name: str, password: str) -> User | None:
    user = next((u for u in web.users if u.name == name and u.password_hash), None)
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)  # type: ignore[arg-type]
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return _user(user) if user else None


def check_token(web: WebConfig, token: str) -> User | None:
    digest = token_hash(token)
    found: WebUser | None = None
    for user in web.users:  # every hash is compared: the time taken does not say which one matched
        if user.token_hash and hmac.compare_digest(user.token_hash.lower(), digest):
            found = user
    return _user(found) if found else None


def _user(user: WebUser) -> User:
    return User(user.name, user.role)


def bearer_user(request: Request, web: WebConfig) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "token: send `Authorization: Bearer <token>` (cmdm serve --new-token NAME makes one)")
    user = check_token(web, token.strip())
    if user is None:
        raise AuthError(401, "token: unknown or revoked bearer token")
    return user


def start_session(request: Request, user: User) -> None:
    request.session.clear()
    request.session.update({"user": user.name, "login_at": int(time.time()), CSRF_FIELD: secrets.token_urlsafe(24)})


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use, so the login form has one too)."""
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(24)
        request.session[CSRF_FIELD] = token
    return str(token)


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get(CSRF_FIELD)
    sent = submitted or request.headers.get(CSRF_HEADER, "")
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise AuthError(403, "csrf: missing or wrong CSRF token; reload the page and try again")


def session_user(request: Request, web: WebConfig) -> User:
    """The logged-in person, from the trusted header when one is configured, else the session."""
    if web.trusted_user_header:
        name = request.headers.get(web.trusted_user_header, "").strip()
        if not name:
            raise AuthError(401, f"login: the trusted proxy sent no {web.trusted_user_header} header")
        user = next((u for u in web.users if u.name == name), None)
        if user is None or user.role == "api":
            raise AuthError(403, "login: this user is not a workbench user in cmdm.yaml (web.users)")
        if request.session.get("user") != name:  # a new person behind the proxy: a fresh session and CSRF token
            start_session(request, _user(user))
        return _user(user)
    name = str(request.session.get("user") or "")
    if not name:
        raise AuthError(401, "login: not logged in")
    login_at = int(request.session.get("login_at", 0))
    if time.time() - login_at > web.session_minutes * 60:
        request.session.clear()
        raise AuthError(401, "session: your login expired; log in again")
    user = next((u for u in web.users if u.name == name), None)
    if user is None or user.role == "api":  # removed from cmdm.yaml since the login
        request.session.clear()
        raise AuthError(401, "login: this user may no longer log in")
    return _user(user)
