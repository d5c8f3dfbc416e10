"""Who may do what on the console: sessions, roles, CSRF, login rate limiting.

- `auth: login` (anywhere but a localhost demo): users with roles and scrypt password hashes (the same
  format as OPC UA's users). A login gets a random session token in an HttpOnly, SameSite=Strict cookie
  (Secure under TLS); sessions live in memory, so an agent restart logs everybody out.
- `auth: none` (only on localhost, saying so on every page): each browser gets an anonymous integrator
  session, so the CSRF check below still guards every write, and requests whose Host is not localhost
  are refused (a web page elsewhere cannot reach the console through DNS rebinding).
- every write (POST) carries the session's CSRF token (header `X-CSRF-Token` or form field `csrf`).
- failed logins slow down the *address* they come from, never the account (`contract.login_throttle`):
  after `login_attempts` failures each further one doubles that address's wait, up to `login_window_s`;
  the same user logs in from anywhere else at once, so nobody can lock the integrator out.
- a login form served over plain HTTP to the network sends passwords in clear: the console says so in
  the log at start (serve it with `tls:` or behind an HTTPS proxy).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass

from contract.login_throttle import LoginThrottle, is_loopback
from contract.web import same_token
from edge_agent.console.settings import ConsoleConfig, ConsoleUser, Role, role_allows

log = logging.getLogger(__name__)

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


class Auth:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.login_required = config.auth == "login"
        self.users = {u.name: u for u in config.users}
        self.throttle = LoginThrottle(free_attempts=config.login_attempts, max_delay_s=config.login_window_s)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        warning = plain_http_warning(config)
        if warning:
            log.warning(warning)

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
        from contract.passwords import verify_password

        def verify() -> ConsoleUser | None:
            user = self.users.get(name)
            ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
            return user if user is not None and ok else None

        user = self.throttle.attempt(client, verify, wrong="unknown user or wrong password")
        return self._new_session(user.name, user.role)

    def logout(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        return same_token(session.csrf, sent)


def host_is_local(host_header: str | None) -> bool:
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in LOCAL_HOSTS


def plain_http_warning(config: ConsoleConfig) -> str | None:
    """The warning due when logins travel in clear to the network (no `tls:`, not on localhost)."""
    if config.auth != "login" or config.tls is not None or is_loopback(config.host):
        return None
    return (
        f"console on {config.host}:{config.port} takes logins over plain HTTP: passwords and session "
        "cookies cross the network in clear; add `tls:` (cert_file, key_file) or put an HTTPS proxy in front"
    )
