"""Failed authentications cost the failing host time, not the agent's CPU."""

from __future__ import annotations

import time
from collections.abc import Callable

AUTH_PENALTY = 0.5  # seconds a host waits after its first failed authentication
MAX_AUTH_PENALTY = 30.0
MAX_THROTTLED_HOSTS = 10_000


class AuthThrottle:
    """After a failed authentication, a host's next PINGs are refused unchecked for a while, that
    while doubling with each failure (0.5 s, 1 s, 2 s, ... at most MAX_AUTH_PENALTY): with no
    delay, one host tried 4,600-5,300 passwords a second. Parallel connections gain nothing, the
    penalty is the host's. A success clears it. At most MAX_THROTTLED_HOSTS are remembered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._hosts: dict[str, tuple[int, float]] = {}  # host -> (failures in a row, refused until)

    def wait(self, host: str) -> float:
        entry = self._hosts.get(host)
        return 0.0 if entry is None else max(0.0, entry[1] - self.clock())

    def failed(self, host: str) -> None:
        failures = self._hosts.pop(host, (0, 0.0))[0] + 1
        if len(self._hosts) >= MAX_THROTTLED_HOSTS:
            del self._hosts[next(iter(self._hosts))]  # the longest unrenewed
        penalty = min(AUTH_PENALTY * 2 ** min(failures - 1, 16), MAX_AUTH_PENALTY)
        self._hosts[host] = (failures, self.clock() + penalty)

    def passed(self, host: str) -> None:
        self._hosts.pop(host, None)
