"""imstore: the local message store of an instant-messaging client.

Conversations, messages and attachments on the device (SQLite through peewee), keyword search in
any language (whoosh), msgpack payloads under strict size limits, and pluggable adapters for the
server. Start with `imstore.open`.
"""

from __future__ import annotations

from .adapters import (
    ConnectionState,
    RemoteFile,
    SendResult,
    SyncAdapter,
    Transport,
    TransportHandler,
)
from .adapters.memory import MemoryServer, RetentionPlan
from .client import ChatClient, MessageListener
from .codec import Limits
from .errors import ErrorCode, IMError
from .message import (
    ChatType,
    Conversation,
    CursorResult,
    Direction,
    DownloadStatus,
    FetchOptions,
    GroupReadAck,
    ImportResult,
    Message,
    MessageStatus,
    MessageType,
    SearchScope,
)
from .store import (
    ConversationHits,
    IndexPolicy,
    IndexStatus,
    MessageStore,
    VerifyReport,
    change_key,
    encrypt_store,
    is_encrypted,
)
from .store import open_store as open  # noqa: F401 - public as imstore.open, not in __all__

__version__ = "0.1.0"

__all__ = [
    "ChatClient",
    "ChatType",
    "ConnectionState",
    "Conversation",
    "ConversationHits",
    "CursorResult",
    "Direction",
    "DownloadStatus",
    "ErrorCode",
    "FetchOptions",
    "GroupReadAck",
    "IMError",
    "ImportResult",
    "IndexPolicy",
    "IndexStatus",
    "Limits",
    "MemoryServer",
    "Message",
    "MessageListener",
    "MessageStatus",
    "MessageStore",
    "MessageType",
    "RemoteFile",
    "RetentionPlan",
    "SearchScope",
    "SendResult",
    "SyncAdapter",
    "Transport",
    "TransportHandler",
    "VerifyReport",
    "change_key",
    "encrypt_store",
    "is_encrypted",
]
# imstore.open is public too, but kept out of __all__ so that a star import cannot shadow the
# built-in open().
