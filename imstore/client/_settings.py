"""The client's settings: one mutable record every part reads when it needs a value, so that an
application changing ``client.require_read_ack`` (or a time-out) changes what every part does.

Rules kept here: ``reconnect_wait`` is three times ``send_timeout`` unless given (at most
`MAX_TIMEOUT`); a time-out is a finite number of seconds, more than 0 and at most `MAX_TIMEOUT`;
a switch is a bool; a value that is not is refused with `IMError(INVALID_PARAM)` naming the
setting, when the client is made and whenever a setting changes (`Settings.check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ..codec import invalid

__all__ = ["MAX_TIMEOUT", "Settings"]

MAX_TIMEOUT = 86_400.0
"""The longest time-out, in seconds (a day): longer ones are a mistake, not a wait."""


@dataclass(slots=True)
class Settings:
    send_timeout: float = 10.0
    reconnect_wait: float = 30.0
    transfer_timeout: float = 300.0
    require_delivery_ack: bool = True
    require_read_ack: bool = True
    auto_download: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            self.check(f.name, getattr(self, f.name))

    @classmethod
    def default_wait(cls, send_timeout: float) -> float:
        """``reconnect_wait`` when none is given: three times ``send_timeout``."""
        checked: float = cls.check("send_timeout", send_timeout)
        return min(3 * checked, MAX_TIMEOUT)

    @staticmethod
    def check(name: str, value: Any) -> Any:
        """``value`` if it may be the setting ``name`` (the module's rules)."""
        if name.endswith(("_timeout", "_wait")):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT:
                raise invalid(name, f"a number of seconds more than 0 and at most {MAX_TIMEOUT:g}",
                              value)
        elif type(value) is not bool:
            raise invalid(name, "True or False", value)
        return value
