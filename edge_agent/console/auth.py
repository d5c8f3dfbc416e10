"""Who may log in to the console: users and roles from the site file, the login itself (throttled).

Sessions, roles per route, CSRF and the localhost rule live in the shared web layer (`contract.web`):
- `auth: login` (anywhere but a localhost demo): users with roles and scrypt password hashes (the same
  format as OPC UA's users). A login gets a session (`contract.web.Logins`): a random token in an
  HttpOnly, SameSite=Strict cookie (Secure under TLS), kept in `console-sessions.sqlite` beside the
  journal, so an agent restart logs nobody out. A user whose password hash or role changes in the site
  file is logged out at the next click once the agent has reloaded it.
- `auth: none` (only on localhost, saying so on every page): each browser gets an anonymous integrator
  session, so the CSRF check still guards every write, and requests whose Host is not localhost are
  refused (a web page elsewhere cannot reach the console through DNS rebinding).
- failed logins slow down the *address* they come from, never the account (`contract.login_throttle`):
  after `login_attempts` failures each further one doubles that address's wait, up to `login_window_s`;
  the same user logs in from anywhere else at once, so nobody can lock the integrator out.
- a login form served over plain HTTP to the network sends passwords in clear: the console says so in
  the log at start (serve it with `tls:` or behind an HTTPS proxy).
"""

from __future__ import annotations

import logging
from pathlib import Path

from contract.login_throttle import LoginThrottle, is_loopback
from contract.session_store import SqlSessionStore
from contract.web import Account, Logins, account_stamp
from edge_agent.console.settings import ROLE_ORDER, ConsoleConfig, ConsoleUser

log = logging.getLogger(__name__)

COOKIE = "ei_session"
#: the visitor of a console without a login (`auth: none`, localhost only): may do everything
NO_LOGIN = Account("local", "integrator", "auth: none")
# A hash that no password matches, checked for unknown users so a login takes as long either way.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def account_of(user: ConsoleUser) -> Account:
    return Account(user.name, user.role, account_stamp(user.password_hash, user.role))


class Auth:
    """The console's users (`accounts`), its login procedure, and its sessions (`logins`)."""

    def __init__(self, config: ConsoleConfig, sessions_file: Path) -> None:
        self.config = config
        self.login_required = config.auth == "login"
        self.users = {u.name: u for u in config.users}
        self.throttle = LoginThrottle(free_attempts=config.login_attempts, max_delay_s=config.login_window_s)
        self.store = SqlSessionStore.in_file(sessions_file, config.session_hours)
        self.logins = Logins(
            self.store,
            self.account,
            ROLE_ORDER,
            COOKIE,
            secure=config.tls is not None,
            anonymous=None if self.login_required else NO_LOGIN,
        )
        warning = plain_http_warning(config)
        if warning:
            log.warning(warning)

    def account(self, name: str) -> Account | None:
        user = self.users.get(name) if self.login_required else None
        return account_of(user) if user is not None else None

    def login(self, name: str, password: str, client: str) -> Account:
        """Check a user's password (scrypt, ~50 ms: call from a worker thread). Raises LoginRefused."""
        from contract.passwords import verify_password

        def verify() -> ConsoleUser | None:
            user = self.users.get(name)
            ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
            return user if user is not None and ok else None

        user = self.throttle.attempt(client, verify, wrong="unknown user or wrong password")
        return account_of(user)

    def close(self) -> None:
        self.store.close()


def plain_http_warning(config: ConsoleConfig) -> str | None:
    """The warning due when logins travel in clear to the network (no `tls:`, not on localhost)."""
    if config.auth != "login" or config.tls is not None or is_loopback(config.host):
        return None
    return (
        f"console on {config.host}:{config.port} takes logins over plain HTTP: passwords and session "
        "cookies cross the network in clear; add `tls:` (cert_file, key_file) or put an HTTPS proxy in front"
    )
