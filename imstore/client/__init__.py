"""The client: a `MessageStore` connected to a server (`ChatClient`, a facade over composed
parts; see `_client` for what each part owns)."""

from ..lifecycle import PENDING_RECEIPT_TTL_MS
from ._attachments import safe_file_name
from ._client import ChatClient
from ._history import MessagePage
from ._listeners import MessageListener

__all__ = ["PENDING_RECEIPT_TTL_MS", "ChatClient", "MessageListener", "MessagePage",
           "safe_file_name"]
