"""Stop signals: SIGTERM, SIGUSR1 and Ctrl-C ask a running program to save and stop."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopSignals:
    """While entered, SIGTERM, SIGUSR1 and the first Ctrl-C only record a stop request (the
    loop then finishes its step and saves); a second Ctrl-C raises KeyboardInterrupt at once.
    Off the main thread, where Python allows no signal handlers, it installs nothing."""

    def __init__(self):
        self.requested: Optional[str] = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._record) for number in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def _record(self, number: int, frame: Optional[FrameType]) -> None:
        self.requested = signal.Signals(number).name
        if number == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
