"""Restart signals as a worker sees them: exit for a signal other than the ones seen at boot,
unless it asks for the release this worker already runs.

Signals carry a unique id, so a new signal is never mistaken for an old one, even after
Redis lost its data and counts generations from 1 again; a signal that vanished (an
emptied Redis) is no signal.
"""

from __future__ import annotations

from .protocol import RestartSignal


class RestartWatch:
    def __init__(self, host: str, release: str) -> None:
        self.host = host
        self.release = release
        self.seen = (RestartSignal(), RestartSignal())  # global and this host's, as at boot

    def boot(self, everyone: RestartSignal, this_host: RestartSignal) -> None:
        self.seen = (everyone, this_host)

    def due(self, everyone: RestartSignal, this_host: RestartSignal) -> str | None:
        """Why this worker must restart now, or None."""
        seen = list(self.seen)
        for i, signal_ in enumerate((everyone, this_host)):
            if not signal_.id or signal_.id == seen[i].id:
                continue
            if signal_.release and signal_.release == self.release:
                seen[i] = signal_  # already on that release: nothing to do
                continue
            scope = "all workers" if i == 0 else f"host {self.host}"
            return f"restart signal for {scope} (generation {signal_.generation}, release {signal_.release or '-'})"
        self.seen = (seen[0], seen[1])
        return None
