"""Who may do what on the console: sessions, roles, CSRF, login rate limiting.

- `auth: login` (anywhere but a localhost demo): users with roles and scrypt password hashes (the same
  format as OPC UA's users). A login gets a random session token in an HttpOnly, SameSite=Strict cookie
  (Secure under TLS); sessions live in memory, so an agent restart logs everybody out.
- `auth: none` (only on localhost, saying so on every page): each browser gets an anonymous integrator
  session, so the CSRF check below still guards every write, and requests whose Host is not localhost
  are refused (a web page elsewhere cannot reach the console through DNS rebinding).
- every write (POST) carries the session's CSRF token (header `X-CSRF-Token` or form field `csrf`).
- failed logins are counted per user name and per client address; beyond `login_attempts` within
  `login_window_s` further attempts are refused until the window has passed.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from edge_agent.console.settings import ConsoleConfig, Role, role_allows

COOKIE = "ei_session"
MAX_SESSIONS = 5000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# A hash that no password matches, checked for unknown users so a login takes as long either way.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


@dataclass
class Session:
    token: str
    user: str
    role: Role
    csrf: str
    expires: float
    anonymous: bool = False

    def allows(self, needed: Role) -> bool:
        return role_allows(self.role, needed)


class LoginRefused(Exception):
    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LoginLimiter:
    """Failed attempts per key (user name, client address) in a sliding window."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked_for(self, keys: list[str]) -> int:
        """Seconds until every key may try again (0: not blocked)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                if len(q) >= self.attempts:
                    wait = max(wait, self.window_s - (now - q[0]))
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


class Auth:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.login_required = config.auth == "login"
        self.users = {u.name: u for u in config.users}
        self.limiter = LoginLimiter(config.login_attempts, config.login_window_s)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _new_session(self, user: str, role: Role, anonymous: bool = False) -> Session:
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user,
            role=role,
            csrf=secrets.token_urlsafe(32),
            expires=time.time() + self.config.session_hours * 3600,
            anonymous=anonymous,
        )
        with self._lock:
            now = time.time()
            for token in [t for t, s in self._sessions.items() if s.expires < now]:
                del self._sessions[token]
            while len(self._sessions) >= MAX_SESSIONS:  # a script without cookies must not grow this forever
                del self._sessions[min(self._sessions, key=lambda t: self._sessions[t].expires)]
            self._sessions[session.token] = session
        return session

    def anonymous_session(self) -> Session:
        """auth: none: the localhost demo's visitor may do everything; CSRF still applies."""
        return self._new_session("local", "integrator", anonymous=True)

    def session(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
        if session is None or session.expires < time.time():
            return None
        if self.login_required and session.anonymous:
            return None
        return session

    def login(self, name: str, password: str, client: str) -> Session:
        """Check a user's password (scrypt, ~50 ms: call from a worker thread). Raises LoginRefused."""
        from opcua.config import verify_password

        keys = [f"user:{name}", f"addr:{client}"]
        wait = self.limiter.blocked_for(keys)
        if wait:
            raise LoginRefused(f"too many failed logins; try again in {wait} s", retry_after_s=wait)
        user = self.users.get(name)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        if user is None or not ok:
            self.limiter.failed(keys)
            raise LoginRefused("unknown user or wrong password")
        self.limiter.succeeded(keys)
        return self._new_session(user.name, user.role)

    def logout(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())


def host_is_local(host_header: str | None) -> bool:
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in LOCAL_HOSTS
