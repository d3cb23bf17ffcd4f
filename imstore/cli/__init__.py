"""The ``imstore`` command: the demo, importing exports, reading, searching and checking a store.

An application on top of the library: it uses the public API only (`MessageStore`'s methods and
the importers' `import_file`/`scan`), and draws what the library reports through callbacks.

Parts: `_parser` (the arguments, and `main`: the failure rule below), `_preflight` (which store,
whose, can it be written now), `_output` (times, names and messages for people; JSON for
scripts), `_progress` (bars, and Ctrl-C during long work), `_importing` (``imstore import``),
`_commands` (every other command), `_keys` (where a key comes from: ``--key-file``,
``$IMSTORE_KEY_FILE``, ``$IMSTORE_KEY``; never the command line), `_crypt_commands`
(``imstore encrypt``, ``rekey``, ``info``), `demo` (``imstore demo``).

Rules kept here:
- text output is for people (names next to ids, times in the local zone with the zone shown,
  ``--utc`` to switch), ``--json`` for scripts: one JSON document, or NDJSON (one object a line)
  for the commands that stream messages (``messages``, ``search``, ``export``);
- every failure is one line on stderr and exit status 2 -- bad input, a missing or foreign store,
  permissions, locks, encodings, a closed pipe -- never a traceback; Ctrl-C is exit 130 after a
  clean stop (an import keeps every batch written before it);
- a file the command writes (``export -o``) appears whole or not at all;
- the global options (``--store``, ``--json``, ``--utc``, ``--key-file``) go before or after the
  subcommand.
"""

from __future__ import annotations

from ._parser import build_parser, command, main
from ._progress import Progress

__all__ = ["Progress", "build_parser", "command", "main"]
