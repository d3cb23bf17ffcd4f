"""The client's settings: one mutable record every part reads when it needs a value, so that an
application changing ``client.require_read_ack`` (or a time-out) changes what every part does."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ErrorCode, IMError

__all__ = ["Settings"]


@dataclass(slots=True)
class Settings:
    send_timeout: float = 10.0
    reconnect_wait: float = 30.0
    transfer_timeout: float = 300.0
    require_delivery_ack: bool = True
    require_read_ack: bool = True
    auto_download: bool = True

    def __post_init__(self) -> None:
        for name in ("send_timeout", "reconnect_wait", "transfer_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise IMError(ErrorCode.INVALID_PARAM, f"{name} must be positive, not {value!r}")
