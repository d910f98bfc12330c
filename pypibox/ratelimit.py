"""Token buckets for password checks, per client address and per user name, bounded in size."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

#: Buckets remembered per kind; the least recently used are forgotten first.
MAX_KEYS = 10_000


class Buckets:
    """``rate`` tokens a second per key, up to ``burst``; an unknown key starts full."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, now: float) -> float:
        tokens, since = self._state.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - since) * self.rate)

    def take(self, key: str) -> float:
        """Take a token: 0.0 if one was there, else the seconds until there is one."""
        now = time.monotonic()
        tokens = self._level(key, now)
        if tokens < 1.0:
            return (1.0 - tokens) / self.rate
        self._state[key] = (tokens - 1.0, now)
        self._state.move_to_end(key)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return 0.0

    def give_back(self, key: str) -> None:
        """Return a token taken for a check that succeeded."""
        now = time.monotonic()
        if key in self._state:
            self._state[key] = (min(self.burst, self._level(key, now) + 1.0), now)


class LoginLimiter:
    """Uncached password checks allowed per address and per user name (success refunds)."""

    def __init__(self, rate: float) -> None:
        burst = max(2.0, rate * 5)
        self.by_address = Buckets(rate, burst)
        self.by_user = Buckets(rate, burst)

    def take(self, address: str, user: str) -> int:
        """0 if a check may run now, else whole seconds to wait (for Retry-After)."""
        wait = self.by_address.take(address)
        if wait:
            return max(1, math.ceil(wait))
        wait = self.by_user.take(user)
        if wait:
            self.by_address.give_back(address)
            return max(1, math.ceil(wait))
        return 0

    def succeeded(self, address: str, user: str) -> None:
        """A right password: what it took is given back."""
        self.by_address.give_back(address)
        self.by_user.give_back(user)
