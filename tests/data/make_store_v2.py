"""Writes tests/data/store_v2.sql: a store made by the schema-2 imstore (commit 005b482), for
the migration test in tests/test_schema.py.

Usage: python tests/data/make_store_v2.py <checkout of 005b482> <scratch dir> <output .sql>
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys


def main(code: str, scratch: str, out: str) -> None:
    sys.path.insert(0, code)
    import imstore
    from imstore import ChatType, Message, MessageType
    from imstore.message import ImageBody

    shutil.rmtree(scratch, ignore_errors=True)
    s = imstore.open(scratch, user_id="alice")
    put = s.insert_message
    put(Message.text("alice", "hello from bob", sender="bob", msg_id="m1", timestamp=1000))
    put(Message.text("bob", "hi bob, lunch tomorrow?", msg_id="m2", timestamp=2000))
    put(Message.text("alice", "明天吃午饭", sender="bob", msg_id="m3", timestamp=3000))
    put(Message.location("alice", 48.85, 2.35, address="Rue de Rivoli", sender="bob",
                         msg_id="m4", timestamp=4000, ext={"note": "meet here"}))
    put(Message.of(MessageType.IMAGE, "alice",
                   ImageBody(remote_url="http://x/p.png", display_name="beach.png", width=10,
                             height=20), sender="bob", msg_id="m5", timestamp=5000))
    s.save_conversation("team", ChatType.GROUP_CHAT, ext={"title": "Team 团队", "color": "blue"})
    for msg_id, text, ts in (("g1", "standup at nine", 6000), ("g3", "to be recalled", 8000),
                             ("g4", "deleted later", 8800)):
        put(Message.text("team", text, chat_type=ChatType.GROUP_CHAT, sender="carol",
                         msg_id=msg_id, timestamp=ts))
    put(Message.custom("team", "red_packet", {"amount": "5"}, chat_type=ChatType.GROUP_CHAT,
                       sender="dave", msg_id="g2", timestamp=7000))
    s.apply_recall(["g3"], 8500)
    s.delete_message("g4")
    s.mark_message_read("m1")
    s.apply_receipts(1, ["never-came"])
    s.save_conversation("empty", ChatType.CHAT, ext={"title": "Nobody"})
    s.flush_index()
    s.close()
    con = sqlite3.connect(os.path.join(scratch, "imstore.db"))
    with open(out, "w", encoding="utf-8") as f:
        f.write("-- A schema-2 store written by imstore at commit 005b482 "
                "(tests/data/make_store_v2.py).\n")
        for line in con.iterdump():
            f.write(line + "\n")
    con.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
