"""Importers on the real exports in ../shared/data/exports and on small exports written here for
what those lack (a full Telegram account, WhatsApp re-exports and zips, Slack files and DMs)."""

from __future__ import annotations

import collections
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

import imstore
from imstore import ChatType, Direction, ErrorCode, IMError, Limits, Message, MessageType
from imstore.importers import (
    ImportOptions,
    conversations,
    detect_format,
    find_exports,
    import_file,
    read_file,
    scan,
)
from imstore.importers.jsonl import dumps, to_dict, write_jsonl
from imstore.importers.whatsapp import chat_name

# ------------------------------------------------------------------------- exports written here

ACCOUNT: dict[str, Any] = {
    "about": "Here is the data you requested.",
    "personal_information": {"user_id": 111, "first_name": "Ann", "last_name": "Lee",
                             "phone_number": "+1 555 0100", "username": "@ann", "bio": ""},
    "contacts": {"about": "contacts", "list": [{"user_id": 222, "first_name": "Bob"}]},
    "chats": {"about": "chats", "list": [
        {"name": "Bob Smith", "type": "personal_chat", "id": 222, "messages": [
            {"id": 1, "type": "message", "date": "2021-03-01T10:00:00",
             "date_unixtime": "1614592800", "from": "Bob Smith", "from_id": "user222",
             "text": "hi Ann", "text_entities": [{"type": "plain", "text": "hi Ann"}]},
            {"id": 2, "type": "message", "date": "2021-03-01T10:01:00",
             "date_unixtime": "1614592860", "edited": "2021-03-01T10:02:00",
             "edited_unixtime": "1614592920", "from": "Ann Lee", "from_id": "user111",
             "reply_to_message_id": 1, "text": "hi Bob", "text_entities": []},
            {"id": 3, "type": "service", "date": "2021-03-01T11:00:00",
             "date_unixtime": "1614596400", "actor": "Ann Lee", "actor_id": "user111",
             "action": "phone_call", "duration_seconds": 65, "discard_reason": "hangup",
             "text": "", "text_entities": []},
            {"id": 4, "type": "message", "date": "2021-03-01T11:05:00",
             "date_unixtime": "1614596700", "from": "Bob Smith", "from_id": "user222",
             "dice": {"emoji": "🎲", "value": 4}, "text": "", "text_entities": []},
            {"id": 5, "type": "message", "date": "2021-03-01T11:06:00",
             "date_unixtime": "1614596760", "from": "Bob Smith", "from_id": "user222",
             "text": "José says 你好", "reactions": [{"type": "emoji", "count": 1, "emoji": "👍"}],
             "text_entities": []},
        ]},
        {"name": "Hiking club", "type": "private_supergroup", "id": 333, "messages": [
            {"id": 10, "type": "message", "date": "2021-03-02T10:00:00",
             "date_unixtime": "1614679200", "from": "Ann Lee", "from_id": "user111",
             "text": ["who comes ", {"type": "bold", "text": "Sunday"}, "?"],
             "text_entities": [{"type": "plain", "text": "who comes "},
                               {"type": "bold", "text": "Sunday"},
                               {"type": "plain", "text": "?"}]},
            {"id": 11, "type": "message", "date": "2021-03-02T10:05:00",
             "date_unixtime": "1614679500", "from": "Carl", "from_id": "user444", "text": "me!",
             "reply_to_message_id": 10, "text_entities": [], "reactions": [
                 {"type": "emoji", "count": 3, "emoji": "❤", "recent": [
                     {"from": "Ann Lee", "from_id": "user111", "date": "2021-03-02T10:07:00",
                      "date_unixtime": "1614679620"},
                     {"from": "Bob Smith", "from_id": "user222", "date": "2021-03-02T10:06:30",
                      "date_unixtime": "1614679590"}]},
                 {"type": "custom_emoji", "count": 1, "document_id": "5368324170671202286"}]},
            {"id": 12, "type": "service", "date": "2021-03-02T10:06:00",
             "date_unixtime": "1614679560", "actor": "Ann Lee", "actor_id": "user111",
             "action": "pin_message", "message_id": 10, "text": "", "text_entities": []},
        ]},
    ]},
}


def write_account(folder: Path, *, sort_keys: bool = False, encoding: str = "utf-8") -> Path:
    path = folder / "result.json"
    text = json.dumps(ACCOUNT, ensure_ascii=False, indent=1, sort_keys=sort_keys)
    path.write_bytes(text.encode(encoding))
    return path


DANA = ("01/03/2021, 09:00 - Messages and calls are end-to-end encrypted. No one outside of this "
        "chat, not even WhatsApp, can read or listen to them.\n"
        "01/03/2021, 09:01 - Dana: hey Ann\n"
        "01/03/2021, 09:02 - Ann: hey Dana\nhow are you\n"
        "13/03/2021, 09:03 - Dana: This message was deleted\n"
        "13/03/2021, 09:04 - Ann: fine <This message was edited>\n"
        "13/03/2021, 09:05 - Dana: ok\n"
        "13/03/2021, 09:05 - Dana: ok\n")
DANA_MORE = "14/03/2021, 10:00 - Dana: two more\n14/03/2021, 10:01 - Ann: lines\n"


def write_whatsapp(folder: Path, name: str = "WhatsApp Chat with Dana.txt", text: str = DANA,
                   encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


BROADCAST = {"type": "message", "subtype": "thread_broadcast", "user": "U3",
             "text": "also in the channel", "ts": "1614600001.500100",
             "thread_ts": "1614600000.000100"}


def write_slack(path: Path, *, extra_files: bool = True, more: tuple[dict, ...] = ()) -> Path:
    users = [{"id": "U1", "name": "ann", "real_name": "Ann Lee"},
             {"id": "U2", "name": "bob", "real_name": "Bob Smith"},
             {"id": "U3", "name": "carl", "real_name": "Carl"}]
    general = [
        {"type": "message", "user": "U1", "text": "hello <@U2>", "ts": "1614600000.000100"},
        {"type": "message", "user": "U2", "text": "reply", "ts": "1614600001.000100",
         "thread_ts": "1614600000.000100", "edited": {"user": "U2", "ts": "1614600005.000000"}},
        {"type": "message", "subtype": "bot_message", "bot_id": "B1", "username": "ci",
         "text": "", "ts": "1614600002.000100", "pinned_to": ["C1"],
         "attachments": [{"pretext": "build 7", "title": "passed", "text": "all green",
                          "fields": [{"title": "branch", "value": "main"}], "color": "good"}]},
        {"type": "message", "user": "U3", "text": "two files", "ts": "1614600003.000100",
         "reactions": [{"name": "+1", "users": ["U1", "U2"], "count": 3},
                       {"name": "tada", "users": ["U3"], "count": 1}],
         "files": [{"id": "F1", "name": "a.png", "mimetype": "image/png", "size": 10,
                    "url_private": "https://files.slack.com/a.png?t=x"},
                   {"id": "F2", "name": "b.pdf", "mimetype": "application/pdf", "size": 20}]},
        {"type": "message", "subtype": "file_comment", "text": "<@U2> commented on a.png: nice",
         "ts": "1614600004.000100", "file": {"id": "F1", "name": "a.png"},
         "comment": {"id": "Fc1", "user": "U2", "comment": "nice"}},
    ]
    dm = [{"type": "message", "user": "U2", "text": "psst", "ts": "1614600010.000100"},
          {"type": "message", "user": "U1", "text": "yes?", "ts": "1614600011.000100"}]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("users.json", json.dumps(users))
        z.writestr("channels.json", json.dumps([{"id": "C1", "name": "general",
                                                  "members": ["U1", "U2", "U3"]}]))
        z.writestr("dms.json", json.dumps([{"id": "D1", "members": ["U1", "U2"]}]))
        general = sorted([*general, *more], key=lambda e: e["ts"])
        z.writestr("general/2021-03-01.json", json.dumps(general if extra_files else general[:1]))
        z.writestr("D1/2021-03-01.json", json.dumps(dm))
    return path


def exports(data_dir: Path, kind: str) -> list[Path]:
    return sorted((data_dir / "exports" / kind).iterdir())


def all_messages(store: imstore.MessageStore) -> list[Message]:
    return [m for c in store.conversations() for m in store.messages(c.conv_id, limit=400)]


# ------------------------------------------------------------------------------------ Telegram


def test_telegram_exports(data_dir: Path, store):
    total = 0
    for path in exports(data_dir, "telegram"):
        res = import_file(store, str(path))
        assert res.imported > 0, path.name
        total += res.imported
        again = import_file(store, str(path))
        assert again.imported == 0, f"{path.name}: re-import added messages"
    assert store.stats()["messages"] == total
    groups = store.conversations(chat_type=ChatType.GROUP_CHAT)
    assert {c.conv_id for c in groups} >= {"tg:channel:10036995664", "tg:group:9888888888",
                                           "tg:group:9999999999"}
    assert store.verify().ok


@pytest.mark.parametrize("name", ["innerdvations_saved.json", "innerdvations_private_channel.json",
                                  "innerdvations_public_supergroup.json", "innerdvations_bot.json",
                                  "chatminer_batch_export.json", "chatminer_single_export.json"])
def test_a_sorted_keys_copy_imports_identically(data_dir: Path, tmp_path: Path, name: str):
    src = data_dir / "exports" / "telegram" / name
    copy = tmp_path / name
    copy.write_text(json.dumps(json.loads(src.read_text(encoding="utf-8")), sort_keys=True),
                    encoding="utf-8")
    # the file name stands in for a chat without a name or id: give the copy the same one
    assert [to_dict(m) for m in read_file(str(src), owner="Ben")] == \
        [to_dict(m) for m in read_file(str(copy), owner="Ben")]


def test_a_sorted_keys_account_export_imports_identically(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = [to_dict(m) for m in read_file(str(write_account(tmp_path / "a")))]
    ordered = [to_dict(m) for m in read_file(str(write_account(tmp_path / "b", sort_keys=True)))]
    assert plain == ordered and len(plain) == 8
    info = scan(str(write_account(tmp_path / "b", sort_keys=True)))
    assert info.owner == "tg:111" and info.total == 8
    assert not any("local date" in n for n in info.notes)
    assert conversations(str(tmp_path / "b" / "result.json"), info) == {
        "tg:222": (ChatType.CHAT, "Bob Smith"), "tg:group:333": (ChatType.GROUP_CHAT, "Hiking club")}


def test_account_export_maps_me_replies_edits_calls_pins_and_dice(tmp_path: Path):
    path = write_account(tmp_path)
    with imstore.open(":memory:", user_id="tg:111") as store:
        res = import_file(store, str(path))
        assert (res.imported, res.skipped) == (8, 0)
        chat = store.messages("tg:222", limit=10)
        assert [m.direction for m in chat] == [Direction.RECEIVE, Direction.SEND, Direction.SEND,
                                               Direction.RECEIVE, Direction.RECEIVE]
        hi, reply, call, dice, last = chat
        assert reply.reply_to == hi.msg_id and "reply_to" not in reply.ext
        assert reply.ext["edited"] and reply.ext["edited_at"] == 1614592920000
        assert call.body.event == "telegram.phone_call"
        assert (call.body.params["duration_seconds"], call.body.params["discard_reason"]) == \
            ("65", "hangup")
        assert dice.body.event == "telegram.dice" and json.loads(dice.body.params["dice"]) == \
            {"emoji": "🎲", "value": 4}
        # a reaction counted without its sender (exports before 2024): an anonymous one
        assert store.reactions(last.msg_id) == [imstore.Reaction("👍", 1, ("tg:anonymous:1",),
                                                                 False)]
        assert "raw" not in last.ext
        assert hi.ext["sender_name"] == "Bob Smith" and hi.sender == "tg:222"
        group = store.messages("tg:group:333")
        assert [m.direction for m in group] == [Direction.SEND, Direction.RECEIVE, Direction.SEND]
        assert group[1].sender == "tg:444" and group[1].ext["sender_name"] == "Carl"
        assert store.get_message(group[2].ext["pinned"]).body.text == "who comes Sunday?"
        assert [(p.msg_id, p.pinned_at, p.pinned_by) for p in store.pin_records("tg:group:333")
                ] == [(group[0].msg_id, 1614679560000, "tg:111")]
        assert group[0].body.formatted == "who comes <b>Sunday</b>?"
        assert store.search_messages("Sunday") == [group[0]]  # the plain text is searched
        assert group[1].reply_to == group[0].msg_id
        # who reacted when, as the export says; the rest of the count anonymous, at the
        # message's time
        assert {(r.key, r.sender, r.timestamp) for r in store.reaction_records([group[1].msg_id])
                } == {("❤", "tg:anonymous:1", 1614679500000), ("❤", "tg:222", 1614679590000),
                      ("custom_emoji:5368324170671202286", "tg:anonymous:1", 1614679500000),
                      ("❤", "tg:111", 1614679620000)}
        heart = next(r for r in store.reactions(group[1].msg_id) if r.key == "❤")
        assert heart == imstore.Reaction("❤", 3, ("tg:anonymous:1", "tg:222", "tg:111"), True)
        assert store.conversation("tg:222").title == "Bob Smith"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le"])
def test_telegram_unicode_encodings_import_the_same(tmp_path: Path, encoding: str):
    (tmp_path / "plain").mkdir()
    (tmp_path / "enc").mkdir()
    want = [to_dict(m) for m in read_file(str(write_account(tmp_path / "plain")))]
    got = [to_dict(m) for m in read_file(str(write_account(tmp_path / "enc", encoding=encoding)))]
    assert got == want


def test_latin1_telegram_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "result.json"
    path.write_bytes('{"name": "Jos\xe9", "type": "personal_chat", "id": 1, "messages": []}'
                     .encode("latin-1"))
    with pytest.raises(IMError) as err:
        scan(str(path))
    assert err.value.code == ErrorCode.FILE_INVALID
    assert "result.json" in err.value.description and "--encoding" in err.value.description
    info = scan(str(path), ImportOptions(encoding="latin-1"))
    assert conversations(str(path), info) == {"tg:1": (ChatType.CHAT, "José")}


def test_telegram_media_types(data_dir: Path, store):
    import_file(store, str(data_dir / "exports" / "telegram" / "innerdvations_saved.json"))
    saved = store.messages("tg:saved:9999999999", limit=400)
    types = collections.Counter(m.type for m in saved)
    assert types[MessageType.IMAGE] and types[MessageType.VIDEO] and types[MessageType.VOICE]
    photo = next(m for m in saved if m.type == MessageType.IMAGE)
    assert photo.body.width == 904 and photo.body.remote_url.startswith("telegram-export:photos/")
    assert photo.body.caption.startswith("I'm a photo") and "caption" not in photo.ext
    assert store.search_messages("photo message sent straight") == [photo]  # default scope
    sticker = next(m for m in saved if "sticker" in m.ext)
    assert sticker.type == MessageType.IMAGE and sticker.body.display_name == "\U0001f92d"
    # Saved Messages: mine, except what I forwarded there from others (and posts of a channel)
    forwarded = {m.msg_id for m in saved if m.ext.get("forwarded_from") not in (None, "Ben")}
    assert forwarded and {m.msg_id for m in saved if m.direction == Direction.SEND} == {
        m.msg_id for m in saved if m.msg_id not in forwarded and m.ext.get("sender_name") == "Ben"}
    reply = next(m for m in saved if m.ext.get("tg_id") == 7)
    assert store.get_message(reply.reply_to).ext["poll"]["question"] == "quiz poll"


def test_telegram_real_exports_map_replies_pins_and_formatting(data_dir: Path, store):
    import_file(store, str(data_dir / "exports" / "telegram" / "innerdvations_private_channel.json"))
    import_file(store, str(data_dir / "exports" / "telegram" / "innerdvations_saved.json"))
    channel = store.messages("tg:channel:10036995664", limit=400)
    by_tg = {m.ext["tg_id"]: m for m in channel}
    assert by_tg[3].reply_to == by_tg[2].msg_id and by_tg[7].reply_to == by_tg[6].msg_id
    # the service message "pinned message 3" pins it, by its actor, at the service's time
    assert [(p.msg_id, p.pinned_at, p.pinned_by) for p in store.pin_records(
        "tg:channel:10036995664")] == [(by_tg[3].msg_id, by_tg[4].timestamp, "tg:10036995664")]
    assert [m.msg_id for m in store.pinned_messages("tg:channel:10036995664")] == [by_tg[3].msg_id]
    saved = {m.ext.get("tg_id"): m for m in store.messages("tg:saved:9999999999", limit=400)}
    styled = saved[319973].body
    assert "<b>bold text</b>" in styled.formatted and "<i>italicized text</i>" in styled.formatted
    assert "<br><br><u>underlined text</u><s>and strikethrough text</s>" in styled.formatted
    assert styled.text.startswith("Just some text with formatting like bold text")
    assert store.search_messages("italicized") == [saved[319973]]  # plain text, not the HTML
    assert '<a href="http://mystery.knightlab.com/">' in saved[176169].body.formatted
    assert saved[225569].body.formatted.count("<a href=") == 1  # a mention is plain text
    assert saved[7].reply_to == saved[6].msg_id


def test_telegram_polls_and_stickers_are_found_in_the_default_scope(data_dir: Path, store):
    import_file(store, str(data_dir / "exports" / "telegram" / "innerdvations_saved.json"))
    for words in ("quiz poll", "option 3", "Poll question", "\U0001f92d"):
        assert store.search_messages(words), words
    poll = store.search_messages("quiz poll")[0]
    assert poll.body.text == "quiz poll\n- option 1\n- option 2\n- option 3"
    assert poll.ext["poll"]["total_voters"] == 1


def test_telegram_attachment_paths_stay_inside_the_export(tmp_path: Path, store):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "photos").mkdir()
    (tmp_path / "export" / "photos" / "ok.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    (tmp_path / "export" / "photos" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    msgs = [{"id": i, "type": "message", "date_unixtime": str(1_600_000_000 + i), "from": "Bob",
             "from_id": "user2", "text": "", "photo": photo}
            for i, photo in enumerate(["photos/ok.jpg", "/etc/passwd", "../secret.jpg",
                                       "photos/link.jpg"])]
    path = tmp_path / "export" / "result.json"
    path.write_text(json.dumps({"name": "Bob", "type": "personal_chat", "id": 2,
                                "messages": msgs}), encoding="utf-8")
    import_file(store, str(path), options=ImportOptions(me=("Ann",)))
    got = {m.ext["tg_id"]: m.body for m in store.messages("tg:2")}
    assert got[0].local_path == str(tmp_path / "export" / "photos" / "ok.jpg")
    for i in (1, 2, 3):  # kept as files the export names, never read from outside it
        assert got[i].local_path == "" and got[i].remote_url.startswith("telegram-export:")


def test_telegram_entity_arrays_read_as_text(data_dir: Path, store):
    import_file(store, str(data_dir / "exports" / "telegram" / "chatminer_single_export.json"))
    entities = store.search_messages("Link:")
    assert [m.body.text for m in entities] == ["Link:https://telegram.org/"]


def test_telegram_unexpected_keys_are_kept_or_skipped_with_reasons(data_dir: Path, store):
    path = data_dir / "exports" / "telegram" / "innerdvations_error-unexpected.json"
    res = import_file(store, str(path))
    assert res.imported >= 10
    assert any("ERROR:wrong_type" in r for r in res.reasons)
    assert any("text is neither" in r for r in res.reasons)
    assert res.skipped == 2 and store.stats()["messages"] == res.imported
    kept = [m for m in all_messages(store) if "raw" in m.ext]
    assert any("ERROR:saved_from" in m.ext["raw"] for m in kept)
    assert any(m.type == MessageType.CUSTOM and m.body.event == "telegram.ERROR:text"
               for m in all_messages(store))


def test_telegram_owner_and_directions(data_dir: Path):
    with imstore.open(":memory:", user_id="Ben") as store:
        import_file(store, str(data_dir / "exports" / "telegram" / "innerdvations_bot.json"))
        msgs = store.messages("tg:8888888888")
        assert {m.direction for m in msgs} == {Direction.SEND, Direction.RECEIVE}


def test_telegram_me_by_name_in_a_group(data_dir: Path):
    path = data_dir / "exports" / "telegram" / "innerdvations_private_group.json"
    with imstore.open(":memory:", user_id="someone") as store:
        import_file(store, str(path), options=ImportOptions(me=("Ben",)))
        assert {m.direction for m in store.messages("tg:group:9999999999")} == {Direction.SEND}
    assert scan(str(path), ImportOptions(me=("Ben",))).owner == "tg:9999999999"


def test_telegram_me_by_name_in_an_export_without_from_id(data_dir: Path):
    path = str(data_dir / "exports" / "telegram" / "chatminer_batch_export.json")
    info = scan(path, ImportOptions(me=("author 1",)))
    assert info.owner == "tg:Author 1" and not any("wrote nothing" in n for n in info.notes)
    with imstore.open(":memory:", user_id=info.owner) as store:
        import_file(store, path, options=ImportOptions(me=("author 1",)))
        msgs = store.messages("tg:group:Chatname")
        assert [(m.direction, m.ext["sender_name"]) for m in msgs] == [
            (Direction.SEND, "Author 1"), (Direction.RECEIVE, "Author 2")]
    assert any("wrote nothing" in n for n in scan(path, ImportOptions(me=("Nobody",))).notes)


def test_telegram_bot_chat_is_with_the_bot_not_with_me(data_dir: Path):
    # The export gives the bot chat the owner's own id; the bot is the one named like the chat.
    path = str(data_dir / "exports" / "telegram" / "innerdvations_bot.json")
    info = scan(path, ImportOptions(tz="UTC"))
    assert conversations(path, info) == {"tg:8888888888": (ChatType.CHAT, "Bot User")}
    with imstore.open(":memory:", user_id="tg:9999999999") as store:
        import_file(store, path, options=ImportOptions(tz="UTC"))
        msgs = store.messages("tg:8888888888")
        assert [(m.direction, m.ext["sender_name"]) for m in msgs] == [
            (Direction.RECEIVE, "Bot User"), (Direction.SEND, "Real User")]
        assert store.conversation("tg:9999999999") is None


def test_telegram_saved_messages_keep_who_wrote_a_forward(data_dir: Path):
    path = str(data_dir / "exports" / "telegram" / "innerdvations_saved.json")
    info = scan(path, ImportOptions(tz="UTC"))
    assert info.owner == "tg:9999999999"  # the Saved Messages chat is its owner's
    with imstore.open(":memory:", user_id=info.owner) as store:
        import_file(store, path, options=ImportOptions(tz="UTC"))
        saved = {m.ext["tg_id"]: m for m in store.messages("tg:saved:9999999999", limit=400)}
    assert saved[183290].direction == Direction.SEND  # typed straight into Saved Messages
    assert saved[210087].direction == Direction.SEND  # my own message, forwarded there
    other = saved[176390]
    assert (other.direction, other.sender, other.ext["forwarded_from"],
            other.ext["sender_name"]) == (Direction.RECEIVE, "tg:Other Person", "Other Person",
                                          "Other Person")


# ------------------------------------------------------------------------------------ WhatsApp


@pytest.mark.parametrize("name", ["chatminer_test_bracketed_mmddyy_24hrs.txt",
                                  "chatminer_test_ddmmyy_24hrs.txt",
                                  "chatminer_test_mmddyy_24hrs.txt",
                                  "chatminer_test_mmddyyyy_12hrs.txt",
                                  "chatminer_test_yyyymmdd_24hrs.txt"])
def test_whatsapp_layouts_and_locales_agree(data_dir: Path, name: str):
    path = data_dir / "exports" / "whatsapp" / name
    msgs = list(read_file(str(path), me=("John Doe",), tz="UTC"))
    assert len(msgs) == 9
    times = [m.local_time for m in msgs]
    assert times == [1546341900000, 1547983380000, 1548881340000, 1591804500000, 1592611680000,
                     1593508200000, 1639131000000, 1640002200000, 1640901660000]
    assert msgs[2].body.text == "Lorem ipsum dolor sit amet,\nconsectetur adipiscing elit. Duis libero."
    assert msgs[2].sender == "wa:Jahn Doe" and msgs[0].sender is None
    assert [m.type for m in msgs].count(MessageType.CUSTOM) == 2  # the two system lines
    assert msgs[7].sender == "wa:🤓" and msgs[6].sender == "wa:John Doe 🤓"
    assert all(m.chat_type == ChatType.GROUP_CHAT for m in msgs)
    assert msgs[2].ext["sender_name"] == "Jahn Doe"


def test_whatsapp_times_are_read_in_the_given_zone(data_dir: Path):
    path = str(data_dir / "exports" / "whatsapp" / "chatminer_test_ddmmyy_24hrs.txt")
    utc = [m.local_time for m in read_file(path, me=("John Doe",), tz="UTC")]
    tokyo = [m.local_time for m in read_file(path, me=("John Doe",), tz="Asia/Tokyo")]
    assert [u - t for u, t in zip(utc, tokyo, strict=True)] == [9 * 3600_000] * len(utc)
    with pytest.raises(IMError) as err:
        scan(path, ImportOptions(tz="Mars/Olympus"))
    assert err.value.code == ErrorCode.INVALID_PARAM and "Mars/Olympus" in err.value.description
    assert any("this machine's zone" in n for n in scan(path).notes)


@pytest.mark.parametrize("file_name, expected", [
    ("WhatsApp Chat with Bob.txt", "Bob"),
    ("WhatsApp Chat with Bob (1).txt", "Bob"),
    ("WhatsApp Chat with Bob (1) (2).txt", "Bob"),
    ("WhatsApp Chat - Bob.zip", "Bob"),
    ("WhatsApp Chat - Family (3).zip", "Family"),
    ("WhatsApp-Chat mit Oma.txt", "Oma"),
    ("Team chat.txt", "Team chat"),
])
def test_chat_names_drop_export_prefixes_and_copy_suffixes(file_name: str, expected: str):
    assert chat_name(file_name) == expected


def test_a_re_export_adds_only_what_is_new(tmp_path: Path):
    first = write_whatsapp(tmp_path)
    again = write_whatsapp(tmp_path, "WhatsApp Chat with Dana (1).txt", DANA + DANA_MORE)
    with imstore.open(":memory:", user_id="tg:111") as store:
        opts = ImportOptions(me=("Ann",), tz="UTC")
        assert import_file(store, str(first), options=opts).imported == 7
        res = import_file(store, str(again), options=ImportOptions(me=("Ann",), tz="UTC"))
        assert (res.imported, res.duplicates) == (2, 7)
        conv = store.conversation("wa:Dana")
        assert conv.chat_type == ChatType.CHAT and conv.title == "Dana"
        msgs = store.messages("wa:Dana", limit=50)
        assert [m.body.text for m in msgs if m.type == MessageType.TEXT].count("ok") == 2
        assert {m.direction for m in msgs if m.ext.get("sender_name") == "Ann"} == {Direction.SEND}


def test_deleted_and_edited_messages(tmp_path: Path):
    msgs = list(read_file(str(write_whatsapp(tmp_path)), me=("Ann",), tz="UTC"))
    deleted = [m for m in msgs if m.ext.get("deleted")]
    assert len(deleted) == 1 and deleted[0].ext["placeholder"] == "This message was deleted"
    assert not any(m.type == MessageType.TEXT and "deleted" in m.body.text for m in msgs)
    edited = [m for m in msgs if m.ext.get("edited")]
    assert [m.body.text for m in edited] == ["fine"]


def test_whatsapp_one_to_one_me_from_the_chat_name(tmp_path: Path):
    info = scan(str(write_whatsapp(tmp_path)), ImportOptions(tz="UTC"))
    assert info.state["ctype"] == ChatType.CHAT and info.owner == "wa:Ann"
    assert any("'Ann'" in n for n in info.notes)
    unnamed = write_whatsapp(tmp_path, "chat.txt")
    with pytest.raises(IMError) as err:
        scan(str(unnamed), ImportOptions(tz="UTC"))
    assert "--me" in err.value.description and "'Dana'" in err.value.description
    with pytest.raises(IMError) as err:
        scan(str(unnamed), ImportOptions(tz="UTC", me=("Anna",)))
    assert "--me 'Anna' is none of the speakers" in err.value.description
    assert scan(str(unnamed), ImportOptions(tz="UTC", me=(" ann",))).owner == "wa:Ann"


def _zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_whatsapp_zip_with_media_is_read_directly(tmp_path: Path):
    text = ("[01/03/2021, 09:01:00] Dana: hey\n"
            "[13/03/2021, 09:02:00] Ann: \u200e<attached: 00000012-PHOTO-2021-03-13.jpg>\n")
    zpath = _zip(tmp_path / "WhatsApp Chat - Dana (1).zip",
                 {"_chat.txt": text, "00000012-PHOTO-2021-03-13.jpg": b"\xff\xd8" * 50})
    assert detect_format(str(zpath)) == "whatsapp"
    msgs = list(read_file(str(zpath), me=("Ann",), tz="UTC"))
    assert [m.conv_id for m in msgs] == ["wa:Dana", "wa:Dana"]
    img = msgs[1]
    assert img.type == MessageType.IMAGE and img.body.size == 100 and img.sender is None


def test_two_chat_txt_exports_stay_two_conversations(tmp_path: Path):
    for chat in ("Dana", "Family"):
        folder = tmp_path / f"WhatsApp Chat - {chat}"
        folder.mkdir()
        (folder / "_chat.txt").write_text(
            f"[01/03/2021, 09:01:00] {chat}x: hi\n[13/03/2021, 09:02:00] Ann: hello\n"
            f"[13/03/2021, 09:03:00] Zed: yo\n", encoding="utf-8")
    with imstore.open(":memory:", user_id="Ann") as store:
        for chat in ("Dana", "Family"):
            import_file(store, str(tmp_path / f"WhatsApp Chat - {chat}" / "_chat.txt"),
                        options=ImportOptions(tz="UTC"))
        assert {c.conv_id: c.title for c in store.conversations()} == {
            "wa:Dana": "Dana", "wa:Family": "Family"}


def test_whatsapp_date_order_from_the_whole_file(tmp_path: Path):
    late = write_whatsapp(tmp_path, "late.txt", "01/02/21, 10:00 - A: x\n01/03/21, 10:00 - B: y\n"
                          "02/13/21, 10:00 - A: z\n")
    times = [m.local_time for m in read_file(str(late), me=("A",), tz="UTC")]
    assert times[2] == 1613210400000  # 13 Feb 2021
    ordered = write_whatsapp(tmp_path, "ordered.txt",
                             "05/01/21, 10:00 - A: x\n06/01/21, 10:00 - B: y\n01/02/21, 10:00 - A: z\n")
    info = scan(str(ordered), ImportOptions(me=("A",), tz="UTC"))
    assert info.state["order"] == "dmy" and any("day/month/year" in n for n in info.notes)
    ambiguous = write_whatsapp(tmp_path, "ambiguous.txt", "01/02/21, 10:00 - A: x\n")
    info = scan(str(ambiguous), ImportOptions(me=("A",), tz="UTC"))
    assert info.state["order"] == "dmy" and any("--date-order" in n for n in info.notes)
    first = next(read_file(str(ambiguous), me=("A",), tz="UTC", date_order="mdy"))
    assert first.local_time == 1609581600000  # 2 Jan 2021, 10:00
    us = write_whatsapp(tmp_path, "us.txt", "1/2/21, 10:00 AM - A: x\n")
    assert scan(str(us), ImportOptions(me=("A",), tz="UTC")).state["order"] == "mdy"
    with pytest.raises(IMError) as err:
        scan(str(late), ImportOptions(me=("A",), tz="UTC", date_order="dmy"))
    assert "--date-order dmy does not fit" in err.value.description


def test_latin1_whatsapp_is_an_error_unless_its_encoding_is_given(tmp_path: Path):
    path = write_whatsapp(tmp_path, "WhatsApp Chat with José.txt",
                          "01/03/2021, 09:01 - José: olá\n13/03/2021, 09:02 - Ann: oi\n",
                          encoding="latin-1")
    with pytest.raises(IMError) as err:
        scan(str(path), ImportOptions(tz="UTC"))
    assert "José.txt, line 1" in err.value.description and "--encoding" in err.value.description
    opts = ImportOptions(me=("Ann",), tz="UTC", encoding="latin-1")
    from imstore.importers import read

    msgs = list(read(str(path), opts, scan(str(path), opts)))
    assert msgs[0].sender == "wa:José" and msgs[0].body.text == "olá"


def test_utf16_whatsapp(tmp_path: Path):
    path = write_whatsapp(tmp_path, encoding="utf-16")
    assert len(list(read_file(str(path), me=("Ann",), tz="UTC"))) == 7


def test_whatsapp_media_location_and_one_to_one(tmp_path: Path):
    chat = tmp_path / "WhatsApp Chat with Bob.txt"
    (tmp_path / "IMG-20210101-WA0001.jpg").write_bytes(b"jpeg")
    chat.write_text(
        "[1/2/21, 9:05:01 PM] Bob: <Media omitted>\n"
        "[1/2/21, 9:06:00 PM] Me: IMG-20210101-WA0001.jpg (file attached)\n"
        "look at this\n"
        "[1/2/21, 9:07:00 PM] Bob: location: https://maps.google.com/?q=48.8584,2.2945\n"
        "[13/2/21, 9:08:00 AM] Bob: hello\n", encoding="utf-8")
    msgs = list(read_file(str(chat), me=("Me",), tz="UTC"))
    assert [m.type for m in msgs] == [MessageType.CUSTOM, MessageType.IMAGE, MessageType.LOCATION,
                                      MessageType.TEXT]
    assert all(m.chat_type == ChatType.CHAT for m in msgs)
    img = msgs[1]
    assert img.sender is None and img.body.local_path.endswith("IMG-20210101-WA0001.jpg")
    assert img.body.caption == "look at this"
    assert (msgs[2].body.latitude, msgs[2].body.longitude) == (48.8584, 2.2945)
    assert msgs[3].local_time == 1613207280000  # 13 Feb 2021: day-first, 12-hour clock
    with imstore.open(":memory:", user_id="Me") as store:
        res = import_file(store, str(chat), options=ImportOptions(tz="UTC"))
        assert res.imported == 4 and store.conversation("wa:Bob").unread_count == 0


# ------------------------------------------------------------------------------------- Slack


def test_slack_export(data_dir: Path, store):
    path = data_dir / "exports" / "slack" / "slack-export-viewer_testarchive.zip"
    res = import_file(store, str(path))
    assert res.imported > 100
    assert import_file(store, str(path)).imported == 0
    convs = {c.conv_id: c.title for c in store.conversations()}
    assert convs == {"slack:enrique": "#enrique", "slack:traveling-sailor": "#traveling-sailor"}
    files = store.messages_by_type(None, MessageType.FILE, limit=50)
    assert files and files[0].body.display_name.endswith(".js") and files[0].body.caption
    joins = [m for m in store.messages("slack:enrique", limit=400, direction=Direction.DOWN)
             if m.type == MessageType.CUSTOM]
    assert joins and joins[0].body.event == "slack.channel_join"
    bots = [m for m in store.messages("slack:traveling-sailor", limit=400)
            if m.sender and m.sender.startswith("slack:bot:")]
    assert bots and "new commit" in bots[0].body.text
    texts = [m for m in store.messages_by_type(None, MessageType.TEXT, limit=400)]
    assert "<@" not in "".join(m.body.text for m in texts)
    comment = next(m for m in texts if m.ext.get("file") == "10_cities.js")
    assert comment.sender == "slack:U0BMS113R" and comment.body.text.startswith("```")
    assert any(m.ext.get("edited") for m in texts)
    # the file comment is a reply to the message that shared the file
    shared = store.get_message(comment.reply_to)
    assert shared.type == MessageType.FILE and shared.body.display_name == "10_cities.js"
    assert not any("reactions" in m.ext.get("raw", {}) for m in all_messages(store))
    reacted = store.get_message("slack:C0JGLMMNX:1459154014.000018")
    assert store.reactions(reacted.msg_id) == [imstore.Reaction(":botman:", 1,
                                                                ("slack:U0BMYT2FL",), False)]


def test_slack_files_bots_comments_threads_and_dms(tmp_path: Path):
    path = write_slack(tmp_path / "workspace.zip", more=(BROADCAST,))
    with imstore.open(":memory:", user_id="ann-everywhere") as store:
        res = import_file(store, str(path), options=ImportOptions(me=("Ann Lee",)))
        assert (res.imported, res.skipped) == (9, 0)
        general = store.messages("slack:general", limit=50)
        assert general[0].direction == Direction.SEND and general[0].body.text == "hello @bob"
        # a thread reply is out of the main timeline, in its root's thread
        (reply,) = store.thread_messages(general[0].msg_id)
        assert reply.thread_id == general[0].msg_id and reply.ext["edited_at"] == 1614600005000
        assert [(t.root, t.reply_count) for t in store.threads("slack:general")] == [
            (general[0].msg_id, 1)]
        assert general[1].body.text == "also in the channel"
        assert general[1].reply_to == general[0].msg_id and general[1].thread_id is None
        bot = general[2]
        assert bot.body.text == "build 7\npassed\nall green\nbranch: main"
        assert bot.ext["raw"]["attachments"] == [{"color": "good"}] and bot.ext["sender_name"] == "ci"
        assert [(p.msg_id, p.pinned_at) for p in store.pin_records("slack:general")] == [
            (bot.msg_id, 1614600002000)]
        a, b = general[3], general[4]
        assert (a.type, b.type) == (MessageType.IMAGE, MessageType.FILE)
        assert b.ext["part_of"] == a.msg_id and a.body.caption == "two files"
        assert store.search_messages("two files") == [a]  # a caption, in the default scope
        assert general[5].sender == "slack:U2" and general[5].body.text == "nice"
        assert general[5].reply_to == a.msg_id  # a file comment replies to the file's message
        assert {(r.key, r.sender) for r in store.reaction_records([a.msg_id])} == {
            (":+1:", "ann-everywhere"), (":+1:", "slack:U2"), (":+1:", "slack:anonymous:1"),
            (":tada:", "slack:U3")}
        assert "raw" not in a.ext
        dm = store.conversation("slack:U2")
        assert dm.chat_type == ChatType.CHAT and dm.title == "Bob Smith"
        assert [m.direction for m in store.messages("slack:U2")] == [Direction.RECEIVE,
                                                                     Direction.SEND]


def test_a_me_that_matches_nobody_is_said(data_dir: Path, tmp_path: Path):
    slack = data_dir / "exports" / "slack" / "slack-export-viewer_testarchive.zip"
    notes = scan(str(slack), ImportOptions(me=("hfaran",))).notes
    assert any("--me 'hfaran' is none of this export's users (abilinski" in n for n in notes)
    assert scan(str(slack), ImportOptions(me=("hamza",))).owner == "slack:U0BMQB6JE"
    tg = data_dir / "exports" / "telegram" / "innerdvations_private_group.json"
    assert "--me 'Nobody' wrote nothing in this export" in scan(
        str(tg), ImportOptions(me=("Nobody",))).notes


def test_an_unzipped_slack_export_reads_like_the_zip(tmp_path: Path):
    path = write_slack(tmp_path / "workspace.zip")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(path) as z:
        z.extractall(folder)
    assert detect_format(str(folder)) == "slack"
    assert [to_dict(m) for m in read_file(str(folder), me=("ann",))] == \
        [to_dict(m) for m in read_file(str(path), me=("ann",))]


# ------------------------------------------------------------------------------------ limits


def test_long_messages_go_in_with_a_higher_payload_limit(tmp_path: Path):
    long = "长" * 1200
    path = write_whatsapp(tmp_path, "WhatsApp Chat with Li.txt",
                          f"01/03/2021, 09:01 - Li: {long}\n13/03/2021, 09:02 - Ann: ok\n")
    opts = ImportOptions(me=("Ann",), tz="UTC")
    with imstore.open(":memory:", user_id="Ann") as store:
        res = import_file(store, str(path), options=opts)
        assert res.imported == 1 and any("MESSAGE_SIZE_LIMIT" in r for r in res.reasons)
    with imstore.open(":memory:", user_id="Ann", limits=Limits(max_payload_bytes=8192)) as store:
        assert import_file(store, str(path), options=opts).imported == 2
        assert store.search_messages("长长")[0].body.text == long


# ------------------------------------------------------------------------------------- formats


def test_formats_are_told_by_content_not_name(tmp_path: Path):
    tg = write_account(tmp_path)
    tg_txt = tmp_path / "telegram.txt"
    tg_txt.write_bytes(tg.read_bytes())
    wa_log = write_whatsapp(tmp_path, "chat.log")
    slack_bin = write_slack(tmp_path / "slack.bin")
    wa_zip = _zip(tmp_path / "something.zip", {"_chat.txt": DANA})
    assert [detect_format(str(p)) for p in (tg_txt, wa_log, slack_bin, wa_zip)] == \
        ["telegram", "whatsapp", "slack", "whatsapp"]
    other = tmp_path / "photo.jpg"
    other.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    with pytest.raises(IMError) as err:
        detect_format(str(other))
    assert "photo.jpg" in err.value.description


def test_jsonl_round_trip_is_lossless(tmp_path: Path):
    src = imstore.open(":memory:", user_id="alice")
    f = tmp_path / "a.bin"
    f.write_bytes(b"x")
    src.insert_message(Message.text("alice", "hi 你好", sender="bob", ext={"b": b"\x00\x01",
                                                                          "n": [1, {"x": None}]}))
    src.insert_message(Message.file("bob", f))
    src.insert_message(Message.location("g", 1.5, 2.5, address="a", chat_type=ChatType.GROUP_CHAT))
    src.insert_message(Message.custom("alice", "ev", {"k": "v"}, sender="bob", is_read=True))
    out = io.StringIO()
    msgs = [m for c in src.conversations() for m in src.messages(c.conv_id)]
    write_jsonl(msgs, out)
    path = tmp_path / "export.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    assert detect_format(str(path)) == "jsonl"
    dst = imstore.open(":memory:", user_id="alice")
    assert import_file(dst, str(path)).imported == 4
    for m in msgs:
        assert dst.get_message(m.msg_id) == m
    assert dst.unread_count("bob") == src.unread_count("bob") == 1
    src.close()
    dst.close()


def test_a_version_1_export_s_reactions_and_pins_come_back_in_their_order(tmp_path: Path):
    lines = [{"record": "store", "owner": "alice", "version": 1},
             {"record": "conversation", "conv_id": "bob", "chat_type": "CHAT"},
             *[to_dict(Message.text("alice", t, sender="bob", msg_id=t, timestamp=1_600_000_000_000
                                    + i)) for i, t in enumerate(("a", "b"))],
             {"record": "reactions", "msg_id": "a", "reactions": {"👍": ["bob", "alice"],
                                                                 "🎉": ["carol"]}},
             {"record": "pins", "conv_id": "bob", "msg_ids": ["b", "a"]}]
    path = tmp_path / "v1.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                    encoding="utf-8")
    with imstore.open(":memory:", user_id="alice") as store:
        assert import_file(store, str(path)).imported == 2
        assert [(r.key, r.senders) for r in store.reactions("a")] == [("👍", ("bob", "alice")),
                                                                      ("🎉", ("carol",))]
        assert [m.msg_id for m in store.pinned_messages("bob")] == ["b", "a"]


def test_a_reaction_the_store_refuses_is_skipped_with_its_reason(tmp_path: Path):
    doc = {"name": "Bob", "type": "personal_chat", "id": 222, "messages": [
        {"id": 1, "type": "message", "date_unixtime": "1614592800", "from": "Bob",
         "from_id": "user222", "text": "hi", "reactions": [
             {"type": "emoji", "count": 1, "emoji": "x" * 300},
             {"type": "emoji", "count": 1, "emoji": "👍"}]}]}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with imstore.open(":memory:", user_id="tg:111") as store:
        res = import_file(store, str(path))
        assert (res.imported, res.skipped) == (1, 0)
        assert [r.key for r in store.reactions(store.messages("tg:222")[0].msg_id)] == ["👍"]
        assert list(res.reasons) == ["reactions: key must be a non-empty str of at most 256 "
                                     "characters"], res.reasons


@pytest.mark.parametrize("content, where", [
    ('{"name": "x", "type": "personal_chat", "id": 1, "messages": [{"id": 1, "type": "message",'
     ' "date": "2021-01-01T00:00:00", "text": "ok"}, {"id": 2, "type": ', "line 1"),
    ('{"name": "x", "messages": [\n{"id": 1, "type": "message", "date_unixtime": "1", "text": "a"},'
     '\n{"id": 2 "type": "message"}]}', "line 3"),
    ('{"no messages here": true}', "line 1"),
])
def test_malformed_telegram_names_file_and_line_and_imports_nothing(tmp_path: Path, store,
                                                                    content, where):
    path = tmp_path / "result.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(IMError) as err:
        import_file(store, str(path))
    assert err.value.code == ErrorCode.INVALID_PARAM
    assert "result.json" in err.value.description and where in err.value.description
    assert store.stats()["messages"] == 0


def test_malformed_whatsapp_and_slack(tmp_path: Path, store):
    bad = tmp_path / "chat.txt"
    bad.write_text("hello there\nno headers at all\n", encoding="utf-8")
    with pytest.raises(IMError) as err:
        import_file(store, str(bad), fmt="whatsapp")
    assert "chat.txt" in err.value.description
    impossible = tmp_path / "chat2.txt"
    impossible.write_text("31/01/21, 10:00 - A: ok\n31/02/21, 10:00 - A: no such day\n")
    with pytest.raises(IMError) as err:
        import_file(store, str(impossible), options=ImportOptions(tz="UTC"))
    assert "line 2" in err.value.description
    z = tmp_path / "slack.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("channels.json", json.dumps([{"id": "C1", "name": "general"}]))
        zf.writestr("general/2020-01-01.json", json.dumps([{"ts": "1.0", "text": "fine"}]))
        zf.writestr("general/2020-01-02.json", "[{broken")
    with pytest.raises(IMError) as err:
        import_file(store, str(z))
    assert "general/2020-01-02.json" in err.value.description
    assert store.stats()["messages"] == 0  # the good day was not imported either


def test_missing_file(store, tmp_path: Path):
    with pytest.raises(IMError) as err:
        import_file(store, str(tmp_path / "nope.json"))
    assert err.value.code == ErrorCode.FILE_NOT_FOUND


def test_a_chat_with_someone_who_never_wrote_is_still_one_to_one(tmp_path: Path):
    path = write_whatsapp(tmp_path, "WhatsApp Chat with Eve.txt",
                          "01/03/2021, 09:01 - Ann: anyone?\n13/03/2021, 09:02 - Ann: hello?\n")
    info = scan(str(path), ImportOptions(me=("Ann",), tz="UTC"))
    assert (info.state["ctype"], info.state["conv"]) == (ChatType.CHAT, "wa:Eve")


def test_telegram_dates_without_unixtime_are_read_in_the_zone(data_dir: Path):
    path = str(data_dir / "exports" / "telegram" / "innerdvations_bot.json")
    utc = [m.local_time for m in read_file(path, owner="Ben", tz="UTC")]
    tokyo = [m.local_time for m in read_file(path, owner="Ben", tz="Asia/Tokyo")]
    assert utc[0] == 1602631864000 and [u - t for u, t in zip(utc, tokyo, strict=True)] == \
        [9 * 3600_000] * 2
    assert any("2 message(s) have only a local date: read in UTC" in n
               for n in scan(path, ImportOptions(tz="UTC")).notes)


# ------------------------------------------------- hostile exports: the library raises only IMError

HOSTILE_VALUES: list[Any] = [None, True, -1, 2**70, 1.5, float("nan"), "", "x" * 5000, "\ud800",
                             [], [1, None], {}, {"a": {"b": None}}, "../../etc/passwd"]


def _telegram_variants() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    chat = ACCOUNT["chats"]["list"][0]
    keys = sorted({k for m in chat["messages"] for k in m} | {"photo", "file", "media_type",
                  "location_information", "poll", "thumbnail", "width", "duration_seconds",
                  "sticker_emoji", "contact_information", "forwarded_from"})
    for key in keys:
        for i, value in enumerate(HOSTILE_VALUES):
            doc = json.loads(json.dumps(ACCOUNT))
            msg = doc["chats"]["list"][0]["messages"][i % 5]
            msg[key] = value if not (isinstance(value, float) and value != value) else "nan"
            if key in ("width", "duration_seconds"):
                msg["photo" if key == "width" else "file"] = "photos/a.jpg"
                msg["media_type"] = "voice_message" if key == "duration_seconds" else None
            out.append((f"telegram {key}={value!r:.20}", doc))
    for key in ("name", "type", "id", "messages", "personal_information", "chats"):
        for value in HOSTILE_VALUES[:12]:
            doc = json.loads(json.dumps(ACCOUNT))
            target = doc if key in ("personal_information", "chats") else doc["chats"]["list"][0]
            target[key] = value if not (isinstance(value, float) and value != value) else "nan"
            out.append((f"telegram chat {key}={value!r:.20}", doc))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("name", "doc"), _telegram_variants(), ids=lambda v: str(v)[:40])
def test_a_hostile_telegram_export_raises_only_imerror(tmp_path: Path, name: str, doc: Any):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with imstore.open(":memory:", user_id="tg:111") as store:
        if name.startswith("telegram chat"):
            try:
                import_file(store, str(path))
            except IMError:
                pass
        else:  # one bad field of one message: that message at most is skipped, with its reason
            try:
                res = import_file(store, str(path))
            except IMError as exc:  # the JSON parser's own limit (ints past 64 bits): the file
                assert "integer overflow" in exc.description, exc
            else:
                assert res.imported >= 7 and res.imported + res.skipped >= 8, res
        assert store.verify().ok


def _slack_variants(tmp_path: Path) -> list[tuple[str, Path]]:
    out = []
    base = write_slack(tmp_path / "base.zip")
    with zipfile.ZipFile(base) as z:
        members = {n: json.loads(z.read(n)) for n in z.namelist()}
    keys = sorted({k for m in members["general/2021-03-01.json"] for k in m})
    for n, (key, value) in enumerate((k, v) for k in keys for v in HOSTILE_VALUES):
        data = json.loads(json.dumps(members))
        data["general/2021-03-01.json"][n % 5][key] = value if value == value else "nan"
        path = tmp_path / f"v{n}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, content in data.items():
                z.writestr(name, json.dumps(content))
        out.append((f"slack {key}={value!r:.20}", path))
    for n, listing in enumerate(["users.json", "channels.json", "dms.json"]):
        for m, value in enumerate(HOSTILE_VALUES[:12]):
            data = json.loads(json.dumps(members))
            data[listing] = value if value == value else "nan"
            path = tmp_path / f"l{n}_{m}.zip"
            with zipfile.ZipFile(path, "w") as z:
                for name, content in data.items():
                    z.writestr(name, json.dumps(content))
            out.append((f"slack {listing}={value!r:.20}", path))
    return out


@pytest.mark.slow
def test_hostile_slack_exports_raise_only_imerror(tmp_path: Path):
    escaped = []
    for name, path in _slack_variants(tmp_path):
        with imstore.open(":memory:", user_id="slack:U1") as store:
            try:
                import_file(store, str(path))
            except IMError:
                pass
            except Exception as exc:
                escaped.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not escaped, "\n".join(escaped)


@pytest.mark.parametrize("text", [
    "01/03/2021, 09:01 - Dana: <attached: ../../etc/passwd>\n13/03/2021, 09:02 - Ann: x\n",
    "99/99/2021, 99:99 - Dana: hi\n",
    "01/03/2021, 09:01 - : \n",
    "01/03/2021, 09:01 - Dana: location: https://maps.google.com/?q=999,999\n"
    "13/03/2021, 09:02 - Ann: x\n",
    "\x00\x00\x00\x00",
    "01/03/2021, 09:01 - Dana: " + "x" * 100_000 + "\n13/03/2021, 09:02 - Ann: x\n",
])
def test_a_hostile_whatsapp_export_raises_only_imerror(tmp_path: Path, text: str):
    path = write_whatsapp(tmp_path, text=text)
    with imstore.open(":memory:", user_id="wa:Ann") as store:
        try:
            import_file(store, str(path), options=ImportOptions(me=("Ann",), tz="UTC"))
        except IMError:
            pass


def _jsonl_variants() -> list[tuple[str, str]]:
    good = to_dict(Message.text("bob", "hi", timestamp=1_600_000_000_000, msg_id="m1"))
    out = [("not json", "{nope\n"), ("a list", "[1, 2]\n"), ("a record", '{"record": 5}\n'),
           ("store", '{"record": "store", "owner": 5}\n'),
           ("conversation", '{"record": "conversation", "conv_id": "c", "chat_type": "X"}\n'),
           ("conversation ext", '{"record": "conversation", "conv_id": "c", "chat_type": "CHAT",'
                                ' "ext": 5, "last_activity": -1}\n'),
           ("conversation marks", '{"record": "conversation", "conv_id": "c", "chat_type": "CHAT",'
                                  ' "marks": 5, "title": 7, "draft": [], "pinned_at": "x"}\n'),
           ("reactions", '{"record": "reactions", "msg_id": "m", "reactions": {"k": 5}}\n'),
           ("reactions of nothing", '{"record": "reactions", "msg_id": "nope", '
                                    '"reactions": {"k": ["bob"]}}\n'),
           ("pins", '{"record": "pins", "conv_id": "c", "msg_ids": [null]}\n'),
           ("pins of nothing", '{"record": "pins", "conv_id": "c", "msg_ids": ["nope"]}\n')]
    for key in good:
        for value in HOSTILE_VALUES:
            d = dict(good)
            d[key] = value if value == value else "nan"
            out.append((f"jsonl {key}={value!r:.20}", json.dumps(d) + "\n"))
    return out


def test_hostile_imstore_exports_raise_only_imerror(tmp_path: Path):
    escaped = []
    for n, (name, text) in enumerate(_jsonl_variants()):
        path = tmp_path / f"{n}.jsonl"
        path.write_text('{"record": "store", "owner": "alice", "version": 1}\n' + text,
                        encoding="utf-8")
        with imstore.open(":memory:", user_id="alice") as store:
            try:
                import_file(store, str(path), fmt="jsonl")
            except IMError:
                pass
            except Exception as exc:
                escaped.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not escaped, "\n".join(escaped)


def test_valid_exports_of_every_format_are_imported(tmp_path: Path):
    """The pair of the hostile-export tests: the same builders, unharmed, import whole."""
    (tmp_path / "tg").mkdir()
    with imstore.open(":memory:", user_id="tg:111") as store:
        assert import_file(store, str(write_account(tmp_path / "tg"))).imported == 8
        assert import_file(store, str(write_slack(tmp_path / "s.zip")),
                           options=ImportOptions(me=("ann",))).imported == 8
        assert import_file(store, str(write_whatsapp(tmp_path)),
                           options=ImportOptions(me=("Ann",), tz="UTC")).imported == 7
        good = tmp_path / "x.jsonl"
        good.write_text(_jsonl_variants()[0][1].replace("{nope", dumps(Message.text(
            "bob", "hi", timestamp=1_600_000_000_000, msg_id="m1"))), encoding="utf-8")
        assert import_file(store, str(good)).imported == 1


# ---------------------------------------------------------------- archives: bounded memory

def _bomb(path: Path, name: str, size: int, *, extra: dict[str, bytes] | None = None) -> Path:
    """A zip whose member ``name`` inflates to ``size`` bytes of one repeated byte (written in
    chunks: the test itself stays small)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for other, data in (extra or {}).items():
            z.writestr(other, data)
        with z.open(name, "w", force_zip64=True) as f:
            chunk = b"a" * (1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
    return path


def test_a_whatsapp_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path):
    import resource

    header = b"01/03/2021, 09:01 - Dana: "
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, \
            z.open("_chat.txt", "w", force_zip64=True) as f:
        f.write(header)
        for _ in range(300):  # 300 MB of one line, deflated to about 300 KB
            f.write(b"a" * (1 << 20))
    assert path.stat().st_size < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with imstore.open(":memory:", user_id="wa:Ann") as store, pytest.raises(IMError) as err:
        import_file(store, str(path), fmt="whatsapp", options=ImportOptions(me=("Ann",)))
    assert err.value.code == ErrorCode.FILE_INVALID and "times its packed size" in str(err.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, grown_mb


def test_a_long_line_within_the_ratio_is_refused_at_the_line_limit(tmp_path: Path):
    text = "01/03/2021, 09:01 - Dana: " + "".join(f"{i:08x}" for i in range((2 << 20) // 8))
    path = write_whatsapp(tmp_path, text=text + "\n")
    with imstore.open(":memory:", user_id="wa:Ann") as store, pytest.raises(IMError) as err:
        import_file(store, str(path), options=ImportOptions(me=("Ann",), tz="UTC"))
    assert "longer than 1,048,576 characters" in str(err.value)


def test_a_slack_day_file_bomb_is_refused(tmp_path: Path):
    base = write_slack(tmp_path / "base.zip")
    with zipfile.ZipFile(base) as z:
        keep = {n: z.read(n) for n in z.namelist() if not n.startswith("general/")}
    path = _bomb(tmp_path / "bomb.zip", "general/2021-03-01.json", 300 << 20, extra=keep)
    with imstore.open(":memory:", user_id="slack:U1") as store, pytest.raises(IMError) as err:
        import_file(store, str(path))
    assert err.value.code == ErrorCode.FILE_INVALID and "general/2021-03-01.json" in str(err.value)


def test_archives_of_real_size_and_ratio_import(tmp_path: Path):
    """The pair of the bomb tests: a chat of many ordinary lines, zipped, imports whole."""
    lines = "".join(f"01/03/2021, 09:{i % 60:02} - {'Ann' if i % 2 else 'Dana'}: message {i} "
                    f"about {i * 7919 % 10007}\n" for i in range(20_000))
    path = tmp_path / "WhatsApp Chat - Dana.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("_chat.txt", lines)
    with imstore.open(":memory:", user_id="wa:Ann") as store:
        res = import_file(store, str(path), options=ImportOptions(me=("Ann",), tz="UTC"))
    assert res.imported == 20_000


def test_a_whatsapp_ios_edit_keeps_no_stray_left_to_right_mark(tmp_path: Path):
    text = ("[01/03/2021, 09:01:00] Dana: hi\n"
            "[01/03/2021, 09:02:00] Ann: fine \u200e<This message was edited>\n")
    path = write_whatsapp(tmp_path, text=text)
    msgs = list(read_file(str(path), me=("Ann",), tz="UTC"))
    assert msgs[1].body.text == "fine" and msgs[1].ext["edited"] is True


def test_a_slack_group_dm_is_titled_by_its_people(tmp_path: Path):
    path = write_slack(tmp_path / "s.zip")
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("mpims.json", json.dumps([{"id": "G9", "name": "mpdm-ann--bob--carl-1",
                                              "is_mpim": True, "members": ["U1", "U2", "U3"]}]))
        z.writestr("mpdm-ann--bob--carl-1/2021-03-01.json",
                   json.dumps([{"type": "message", "user": "U2", "text": "all three",
                                "ts": "1614600020.000100"}]))
    info = scan(str(path), ImportOptions(me=("ann",)))
    assert conversations(str(path), info)["slack:mpdm-ann--bob--carl-1"] == (
        ChatType.GROUP_CHAT, "Bob Smith, Carl")


def _wa(tmp_path: Path) -> str:
    return str(write_whatsapp(tmp_path))


@pytest.mark.parametrize(("call", "field"), [
    (lambda s, p: scan(None), "path"),
    (lambda s, p: scan("x\x00"), "path"),
    (lambda s, p: scan(p, fmt="zzz"), "fmt"),
    (lambda s, p: scan(p, ImportOptions(tz=5)), "options.tz"),
    (lambda s, p: scan(p, ImportOptions(encoding=5)), "options.encoding"),
    (lambda s, p: scan(p, ImportOptions(me=[5])), "options.me"),
    (lambda s, p: scan(p, "Ann"), "options"),
    (lambda s, p: import_file(None, p), "store"),
    (lambda s, p: import_file(s, 5), "path"),
    (lambda s, p: import_file(s, p, progress=5), "progress"),
    (lambda s, p: import_file(s, p, batch_size=0), "batch_size"),
    (lambda s, p: read_file(b"/tmp"), "path"),
    (lambda s, p: find_exports(None), "folder"),
    (lambda s, p: detect_format(3), "path"),
])
def test_a_bad_argument_to_the_importers_is_an_imerror_naming_it(tmp_path: Path, call, field):
    path = _wa(tmp_path)
    with imstore.open(":memory:", user_id="wa:Ann") as store, pytest.raises(IMError) as err:
        call(store, path)
    assert err.value.code == ErrorCode.INVALID_PARAM and field in err.value.description


def test_the_importers_take_a_single_name_and_a_path_like(tmp_path: Path):
    """The pair: valid arguments of every kind are taken."""
    with imstore.open(":memory:", user_id="wa:Ann") as store:
        res = import_file(store, Path(_wa(tmp_path)), options=ImportOptions(me="Ann", tz="UTC"))
    assert res.imported == 7


def test_whatsapp_attachment_paths_stay_inside_the_export(tmp_path: Path):
    (tmp_path / "export").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    (tmp_path / "export" / "ok.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "export" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    path = write_whatsapp(tmp_path / "export", text=(
        "01/03/2021, 09:01 - Dana: <attached: link.jpg>\n"
        "01/03/2021, 09:02 - Dana: <attached: ../secret.jpg>\n"
        "01/03/2021, 09:03 - Dana: <attached: ok.jpg>\n13/03/2021, 09:04 - Ann: x\n"))
    msgs = list(read_file(str(path), me=("Ann",), tz="UTC"))
    assert msgs[0].body.local_path == "" and msgs[0].body.remote_url == "whatsapp-export:link.jpg"
    assert msgs[1].type == MessageType.TEXT  # a name with a folder in it is no attachment
    assert msgs[2].body.local_path == str((tmp_path / "export" / "ok.jpg").resolve())
