"""The session store: one Session per browser tab, keyed by gradio's `request.session_hash`.

    store = SessionStore(Settings())
    s = store.get("session-hash")     # created lazily; SessionsFull when at the cap
    store.peek("session-hash")        # the session or None, never creates one
    store.free("session-hash")        # on demo.unload: deletes the session's uploads
    store.sweep()                     # frees sessions idle longer than settings.idle_timeout_s

Every `get` sweeps first, so a full studio makes room as soon as someone has gone idle, and
counts as activity: a session is idle when none of its tab's requests came for the timeout.
"""

from __future__ import annotations

import threading
import time

from app.session import Session
from app.settings import Settings
from hermes.errors import HermesError


class SessionsFull(HermesError):
    """Raised when the app already serves its maximum number of sessions."""


class SessionStore:
    """session_hash -> Session, created lazily, freed on unload or after idling."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Session:
        self.sweep()
        with self._lock:
            if key not in self._sessions:
                if len(self._sessions) >= self.settings.max_sessions:
                    raise SessionsFull(f"The studio is full ({self.settings.max_sessions} people are using it). "
                                       "Please try again in a few minutes.")
                self._sessions[key] = Session(self.settings)
            session = self._sessions[key]
            session.touched = time.monotonic()  # a request for the session is activity
            return session

    def peek(self, key: str) -> Session | None:
        """The session if it exists (never creates one)."""
        with self._lock:
            return self._sessions.get(key)

    def free(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def sweep(self) -> None:
        """Free sessions idle for longer than the timeout."""
        now = time.monotonic()
        with self._lock:
            idle = [k for k, s in self._sessions.items() if now - s.touched > self.settings.idle_timeout_s]
            freed = [self._sessions.pop(k) for k in idle]
        for session in freed:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)
