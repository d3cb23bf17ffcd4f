"""The `FetchOptions` filter of a history page, the one every adapter applies.

Rules kept here:
- a message is kept when its type is one of ``options.types`` (all types when None), its sender is
  ``options.sender`` (anyone when None) and its server time lies in
  ``[options.start_time, options.end_time]`` (each bound inclusive, open when None);
- paging UP (newest first) is over once a message is older than ``start_time``; paging DOWN once
  one is newer than ``end_time``: nothing further in that direction can match;
- the server time of a message without one counts as 0.
"""

from __future__ import annotations

from ..message import Direction, FetchOptions, Message

__all__ = ["goes_up", "keeps", "past_window"]


def goes_up(options: FetchOptions) -> bool:
    """Whether the page runs from the newest message back in time."""
    return options.direction != Direction.DOWN


def _in_window(t: int, options: FetchOptions) -> bool:
    return ((options.start_time is None or t >= options.start_time)
            and (options.end_time is None or t <= options.end_time))


def keeps(msg: Message, options: FetchOptions) -> bool:
    """Whether ``msg`` belongs on a page fetched with ``options``."""
    return ((not options.types or msg.type in options.types)
            and (options.sender is None or msg.sender == options.sender)
            and _in_window(msg.server_time or 0, options))


def past_window(msg: Message, options: FetchOptions) -> bool:
    """Whether paging in ``options.direction`` has passed the time window at ``msg``."""
    t = msg.server_time or 0
    if goes_up(options):
        return options.start_time is not None and t < options.start_time
    return options.end_time is not None and t > options.end_time
