"""``python -m imstore.cli``: the same as the ``imstore`` command."""

import sys

from ._parser import command

sys.exit(command())
