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
from .client import ChatClient, MessageListener, MessagePage
from .codec import Limits
from .errors import ErrorCode, IMError
from .message import (
    ChatType,
    CmdBody,
    Conversation,
    ConversationMark,
    CursorResult,
    CustomBody,
    Direction,
    DownloadStatus,
    FetchOptions,
    FileBody,
    GroupReadAck,
    ImageBody,
    ImportResult,
    LocationBody,
    Message,
    MessageStatus,
    MessageType,
    PinRecord,
    Reaction,
    ReactionRecord,
    SearchScope,
    TextBody,
    ThreadSummary,
    UndecodableBody,
    VideoBody,
    VoiceBody,
)
from .store import (
    ConversationHits,
    Gap,
    IndexPolicy,
    IndexStatus,
    MergeResult,
    MessageStore,
    Span,
    TimelinePage,
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
    "CmdBody",
    "ConnectionState",
    "Conversation",
    "ConversationHits",
    "ConversationMark",
    "CursorResult",
    "CustomBody",
    "Direction",
    "DownloadStatus",
    "ErrorCode",
    "FetchOptions",
    "FileBody",
    "Gap",
    "GroupReadAck",
    "IMError",
    "ImageBody",
    "ImportResult",
    "IndexPolicy",
    "IndexStatus",
    "Limits",
    "LocationBody",
    "MemoryServer",
    "MergeResult",
    "Message",
    "MessageListener",
    "MessagePage",
    "MessageStatus",
    "MessageStore",
    "MessageType",
    "PinRecord",
    "Reaction",
    "ReactionRecord",
    "RemoteFile",
    "RetentionPlan",
    "SearchScope",
    "SendResult",
    "Span",
    "SyncAdapter",
    "TextBody",
    "ThreadSummary",
    "TimelinePage",
    "Transport",
    "TransportHandler",
    "UndecodableBody",
    "VerifyReport",
    "VideoBody",
    "VoiceBody",
    "change_key",
    "encrypt_store",
    "is_encrypted",
]
# imstore.open is public too, but kept out of __all__ so that a star import cannot shadow the
# built-in open().
