"""The ``imstore`` console script's first code: Ctrl-C while Python loads imstore ends the command
quietly (exit 130), as it does at any later moment.

It lives outside the ``imstore`` package because importing ``imstore.cli`` imports the library
first (a few hundred milliseconds): a handler installed inside the package would come too late.
The command itself is `imstore.cli.command`.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("imstore: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted)
    from imstore.cli import command

    return command()
