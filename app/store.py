"""The session store: one Session per browser tab, keyed by gradio's `request.session_hash`,
and bound to the client (network address) that started it.

    store = SessionStore(Settings())
    client = client_address(peer="10.0.0.5", forwarded_for="198.51.100.7", hops=1)   # "198.51.100.7"
    s = store.start("session-hash", client)   # an explicit start (page load, play, upload, webcam)
    store.find("session-hash", client)        # a read: the session or None, never creates one
    store.peek("session-hash")                # the session or None, whoever asks (no activity)
    store.free("session-hash", client)        # on unload: only the owner frees; deletes its files
    store.sweep()                             # frees sessions idle longer than settings.idle_timeout_s

Only `start` creates a session, within two caps: the studio's (`max_sessions`) and each
client's (`Settings.client_cap`, a quarter of the studio by default), so one client cannot
fill the studio; loopback clients (the operator's own machine, the tests) have no per-client
cap. A session answers only the client that started it: `find`, `start` and `free` from
another address treat it as absent. Every `start` / `find` sweeps first, so a full studio
makes room as soon as someone has gone idle, and counts as activity.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import ipaddress
import logging
import threading
import time

from app.session import Session
from app.settings import Settings
from hermes.errors import HermesError

LOG = logging.getLogger("hermes.studio")
LOCAL = "127.0.0.1"  # the client of a Python caller (tests, notebooks): the local machine


class SessionsFull(HermesError):
    """Raised when the app, or this client's share of it, already serves its maximum of sessions."""


class SessionTaken(HermesError):
    """Raised when a session hash is already held by another client."""


def client_address(peer: str | None, forwarded_for: str | None, hops: int) -> str:
    """Who is asking, for the per-client cap and session ownership.

    `peer` is the connecting address; `forwarded_for` the X-Forwarded-For header; `hops` how
    many proxies in front of the app are trusted to append to it (1 on a Space). Each such
    proxy appends the address it saw, so the entry `hops` from the right is the client, and
    anything to its left is what the client itself claimed (ignored). With hops=0 the header
    is ignored, and the first request that carries one logs a warning (the app is likely behind
    a proxy nobody counted: every visitor would then be the proxy's address). IPv6 clients are
    keyed by their /64 (one household or host holds a whole /64)."""
    address = peer or "unknown"
    entries = [e.strip() for e in (forwarded_for or "").split(",") if e.strip()]
    if hops <= 0 and entries:
        warn_forwarded_ignored()
    if hops > 0 and entries:
        address = entries[-hops] if len(entries) >= hops else entries[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@functools.cache  # once per process (cache_clear() to warn again)
def warn_forwarded_ignored() -> None:
    """Log, once, that X-Forwarded-For arrived while no proxy is trusted (HERMES_PROXY_HOPS=0)."""
    LOG.warning("a request carries X-Forwarded-For but HERMES_PROXY_HOPS is 0: the header is ignored, and every "
                "client is the connecting address. Behind a proxy (a Space, a reverse proxy) all visitors then share "
                "one address, its per-client cap and its sessions: set HERMES_PROXY_HOPS to the number of proxies "
                "that append to the header")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library's symbols, when it is glibc (it has malloc_trim); None elsewhere."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_arenas(n: int) -> bool:
    """At most `n` glibc malloc arenas from now on (M_ARENA_MAX; in effect for threads that have
    none yet, so call it before the server's threads start). glibc's default, 8 a core, lets each
    worker thread keep its own heap, whose freed pages it rarely returns. True if it was set."""
    libc = _libc()
    return bool(n > 0 and libc is not None and libc.mallopt(-8, n) == 1)  # -8: M_ARENA_MAX


def release_memory() -> None:
    """Hand the memory of freed sessions back to the system: collect reference cycles, then
    have glibc return the free pages of every arena (malloc_trim; elsewhere only the collection)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def is_local(client: str) -> bool:
    """True for a loopback client (this machine), which the per-client cap does not limit."""
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


class SessionStore:
    """session_hash -> Session and its client, created by an explicit start, freed on unload
    by its own client or after idling."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: dict[str, Session] = {}
        self._owners: dict[str, str] = {}  # session_hash -> the client that started it
        self._lock = threading.Lock()

    def start(self, key: str, client: str = LOCAL) -> Session:
        """The session `key` of `client`, created if it does not exist yet. Raises SessionsFull
        (the studio or this client's share is full) or SessionTaken (another client holds it)."""
        self.sweep()
        with self._lock:
            if key in self._sessions:
                if self._owners[key] != client:
                    raise SessionTaken("this tab's session belongs to another connection: reload the page to "
                                       "start a new one")
            else:
                self._check_room(client)
                self._sessions[key] = Session(self.settings)
                self._owners[key] = client
            session = self._sessions[key]
            session.touched = time.monotonic()  # a request for the session is activity
            return session

    def find(self, key: str, client: str = LOCAL) -> Session | None:
        """The session `key` if it exists and `client` started it (counts as activity); None
        otherwise. Never creates one."""
        self.sweep()
        with self._lock:
            session = self._sessions.get(key)
            if session is None or self._owners[key] != client:
                return None
            session.touched = time.monotonic()
            return session

    def peek(self, key: str) -> Session | None:
        """The session if it exists, whoever asks (never creates one, not activity)."""
        with self._lock:
            return self._sessions.get(key)

    def free(self, key: str, client: str | None = None) -> bool:
        """Free the session `key` (and delete its files) if `client` started it, or whoever
        started it when `client` is None (the operator's call). True if one was freed."""
        with self._lock:
            if key not in self._sessions or (client is not None and self._owners[key] != client):
                return False
            freed = [self._sessions.pop(key)]
            del self._owners[key]
        self._release(freed)
        return True

    def sweep(self) -> None:
        """Free sessions idle for longer than the timeout (one at work is not idle: under load a
        single ingest or answer can outlast a short timeout)."""
        now = time.monotonic()
        with self._lock:
            idle = [k for k, s in self._sessions.items()
                    if now - s.touched > self.settings.idle_timeout_s and not s.busy()]
            freed = [self._sessions.pop(k) for k in idle]
            for k in idle:
                del self._owners[k]
        if freed:
            self._release(freed)

    def _release(self, freed: list[Session]) -> None:
        """Close the sessions (their files go), and hand their memory back (settings.trim_memory)."""
        while freed:
            freed.pop().close()  # the last reference goes: what the session held is free now
        if self.settings.trim_memory:
            release_memory()

    def clients(self) -> int:
        """How many distinct clients hold sessions."""
        with self._lock:
            return len(set(self._owners.values()))

    def _check_room(self, client: str) -> None:
        if len(self._sessions) >= self.settings.max_sessions:
            raise SessionsFull(f"The studio is full ({self.settings.max_sessions} people are using it). "
                               "Please try again in a few minutes.")
        held = sum(owner == client for owner in self._owners.values())
        if not is_local(client) and held >= self.settings.client_cap:
            raise SessionsFull(f"your address already holds {held} sessions (at most {self.settings.client_cap} "
                               "per visitor, so that everyone gets a turn): close another tab, or try again once it "
                               f"has been idle for {self.settings.idle_text}")

    def __len__(self) -> int:
        return len(self._sessions)
