"""Failed logins slowed down per source address, never per account: the line console and the hub both use it.

Counting failures per *user name* lets anybody on the network lock the right person out (five wrong
passwords for "integrator" and the integrator cannot log in either). So only the address that failed
waits: its first `free_attempts` failures cost nothing, each further one doubles its wait (`first_delay_s`,
2x, 4x ... up to `max_delay_s`). The same account logs in from any other address at once, and a success
from an address clears that address. An address is forgotten `forget_after_s` after its last failure;
at most `max_addresses` are remembered (the least recent go first), so a scan cannot grow it forever.

`LoginThrottle.attempt(address, verify)` is the one login procedure of the console and the hub: refused
at once (with the seconds to wait) while the address waits, else the password is checked, and the
outcome counted.

Example:
    >>> t = LoginThrottle(free_attempts=2, first_delay_s=1, max_delay_s=8)
    >>> [t.failed("10.0.0.9", now=100.0) for _ in range(4)]  # the wait each failure imposes
    [0.0, 1.0, 2.0, 4.0]
    >>> t.wait_s("10.0.0.9", now=100.0), t.wait_s("10.0.0.5", now=100.0)
    (4.0, 0.0)
    >>> t.wait_s("10.0.0.9", now=104.0)
    0.0
    >>> t.succeeded("10.0.0.9"); t.wait_s("10.0.0.9", now=100.0)
    0.0
    >>> t.attempt("10.0.0.7", lambda: "viewer")  # what `verify` found: the user's role, a session ...
    'viewer'
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class LoginRefused(Exception):
    """A login turned down: wrong user or password (401), or an address that must wait (429)."""

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """`wait_s(addr)` before checking a password; `failed(addr)` / `succeeded(addr)` after. Thread-safe."""

    def __init__(
        self,
        free_attempts: int = 5,
        first_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        forget_after_s: float | None = None,
        max_addresses: int = 10_000,
    ) -> None:
        self.free_attempts = free_attempts
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.forget_after_s = forget_after_s if forget_after_s is not None else max(3600.0, 2 * max_delay_s)
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def delay_after(self, failures: int) -> float:
        """The wait imposed after `failures` failed logins in a row from one address."""
        over = failures - self.free_attempts
        if over < 0:
            return 0.0
        return min(self.first_delay_s * 2.0 ** min(over, 60), self.max_delay_s)

    def wait_s(self, address: str, now: float | None = None) -> float:
        """Seconds this address must wait before its next attempt (0: it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            f = self._by_address.get(address)
            if f is None:
                return 0.0
            if now - f.last > self.forget_after_s:
                del self._by_address[address]
                return 0.0
            return max(0.0, f.last + self.delay_after(f.count) - now)

    def failed(self, address: str, now: float | None = None) -> float:
        """Count a failure; returns the wait it imposes on this address."""
        now = time.monotonic() if now is None else now
        with self._lock:
            f = self._by_address.pop(address, None)
            if f is None or now - f.last > self.forget_after_s:
                f = _Failures(0, now)
            f.count += 1
            f.last = now
            self._by_address[address] = f  # most recent last
            while len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)
            return self.delay_after(f.count)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._by_address.pop(address, None)

    def attempt(
        self, address: str, verify: Callable[[], T | None], wrong: str = "wrong user or password"
    ) -> T:
        """One login from `address`: refused without calling `verify` while the address waits; else
        `verify()` (checks the password; None = wrong: refused with `wrong`) decides, and the outcome is
        counted. Blocking (a password hash takes ~50 ms): call it from a worker thread. Raises
        LoginRefused."""
        wait = self.wait_s(address)
        if wait:
            seconds = math.ceil(wait)
            raise LoginRefused(
                f"too many failed logins from {address}; try again in {seconds} s", retry_after_s=seconds
            )
        found = verify()
        if found is None:
            self.failed(address)
            raise LoginRefused(wrong)
        self.succeeded(address)
        return found


def is_loopback(host: str) -> bool:
    """True for a listen address only this machine reaches (a login there may go over plain HTTP)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
