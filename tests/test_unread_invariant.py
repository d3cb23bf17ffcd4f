"""The unread invariant under random sequences of operations, against a plain-Python model."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import imstore
from imstore import ChatType, Direction, Message

CONVS = {"bob": ChatType.CHAT, "carol": ChatType.CHAT, "g1": ChatType.GROUP_CHAT,
         "room": ChatType.CHAT_ROOM}


@dataclass
class Row:
    conv: str
    received: bool
    read: bool
    time: int


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = imstore.open(":memory:", user_id="alice", search=False)
        self.rows: dict[str, Row] = {}
        self.convs: set[str] = set()
        self.n = 0

    def teardown(self) -> None:
        self.store.close()

    def _make(self, conv: str, received: bool, t: int, is_read: bool | None) -> Message:
        self.n += 1
        ct = CONVS[conv]
        if ct == ChatType.CHAT:
            to = "alice" if received else conv
            sender = conv if received else None
        else:
            to, sender = conv, ("zed" if received else None)
        return Message.text(to, f"m{self.n}", chat_type=ct, sender=sender, timestamp=t,
                            msg_id=f"id{self.n}", is_read=is_read)

    def _record(self, m: Message, read: bool) -> None:
        self.rows[m.msg_id] = Row(m.conv_id, m.direction == Direction.RECEIVE, read, m.timestamp)
        self.convs.add(m.conv_id)

    @rule(conv=st.sampled_from(sorted(CONVS)), received=st.booleans(), t=st.integers(0, 20))
    def insert(self, conv, received, t):
        m = self.store.insert_message(self._make(conv, received, t, None))
        self._record(m, read=not received)

    @rule(items=st.lists(st.tuples(st.sampled_from(sorted(CONVS)), st.booleans(),
                                   st.integers(0, 20), st.sampled_from([None, True, False])),
                         max_size=8),
          batch=st.integers(1, 4))
    def import_(self, items, batch):
        msgs = [self._make(c, r, t, flag) for c, r, t, flag in items]
        self.store.import_messages(msgs, batch_size=batch)
        for m, (_, received, _, flag) in zip(msgs, items, strict=True):
            self._record(m, read=not received or flag is not False)

    @rule(data=st.data())
    def mark_one(self, data):
        if self.rows:
            msg_id = data.draw(st.sampled_from(sorted(self.rows)))
            self.store.mark_message_read(msg_id)
            self.rows[msg_id].read = True

    @rule(conv=st.sampled_from(sorted(CONVS)))
    def mark_conversation(self, conv):
        if conv in self.convs:
            self.store.mark_conversation_read(conv)
            for r in self.rows.values():
                if r.conv == conv:
                    r.read = True

    @rule(data=st.data())
    def mark_conversation_up_to(self, data):
        if self.rows:
            msg_id = data.draw(st.sampled_from(sorted(self.rows)))
            anchor = self.rows[msg_id]
            if anchor.conv not in self.convs:
                return
            self.store.mark_conversation_read(anchor.conv, up_to_msg_id=msg_id)
            key = (anchor.time, int(msg_id[2:]))  # rows are stored in id order
            for k, r in self.rows.items():
                if r.conv == anchor.conv and (r.time, int(k[2:])) <= key:
                    r.read = True

    @rule(data=st.data())
    def recall_one(self, data):
        if self.rows:  # a recall notice keeps its read state, its place and its conversation
            msg_id = data.draw(st.sampled_from(sorted(self.rows)))
            self.store.apply_recall([msg_id], 99)

    @rule()
    def mark_all(self):
        self.store.mark_all_conversations_read()
        for r in self.rows.values():
            r.read = True

    @rule(data=st.data())
    def delete_one(self, data):
        if self.rows:
            msg_id = data.draw(st.sampled_from(sorted(self.rows)))
            assert self.store.delete_message(msg_id)
            del self.rows[msg_id]

    @rule(conv=st.sampled_from(sorted(CONVS)), a=st.integers(0, 20), b=st.integers(0, 20))
    def delete_range(self, conv, a, b):
        lo, hi = min(a, b), max(a, b)
        n = self.store.delete_messages(conv, start_time=lo, end_time=hi)
        gone = [k for k, r in self.rows.items() if r.conv == conv and lo <= r.time <= hi]
        assert n == len(gone)
        for k in gone:
            del self.rows[k]

    @rule(conv=st.sampled_from(sorted(CONVS)), with_messages=st.booleans())
    def delete_conversation(self, conv, with_messages):
        existed = self.store.delete_conversation(conv, delete_messages=with_messages)
        assert existed == (conv in self.convs)
        self.convs.discard(conv)
        for k in [k for k, r in self.rows.items() if r.conv == conv]:
            if with_messages:
                del self.rows[k]
            else:
                self.rows[k].read = True

    @invariant()
    def unread_counts_match(self):
        convs = {c.conv_id: c for c in self.store.conversations()}
        assert set(convs) == self.convs
        for conv in CONVS:
            want = sum(1 for r in self.rows.values() if r.conv == conv and r.received and not r.read)
            assert self.store.unread_count(conv) == want
            if conv in convs:
                assert convs[conv].unread_count == want
        total = sum(1 for r in self.rows.values()
                    if r.received and not r.read and CONVS[r.conv] != ChatType.CHAT_ROOM)
        assert self.store.total_unread_count() == total
        for conv, c in convs.items():
            mine = [r for r in self.rows.values() if r.conv == conv]
            assert (c.last_message is None) == (not mine)
            if mine:
                assert c.last_message.timestamp == max(r.time for r in mine)

    @invariant()
    def nothing_to_repair(self):
        assert self.store.verify().ok


TestUnreadInvariant = StoreModel.TestCase
TestUnreadInvariant.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
