"""Importers on the real exports in ../shared/data/exports, and the JSON-lines round trip."""

from __future__ import annotations

import collections
import io
import json
import zipfile
from pathlib import Path

import pytest

import imstore
from imstore import ChatType, Direction, ErrorCode, IMError, Message, MessageType
from imstore.importers import detect_format, import_file, read_file
from imstore.importers.jsonl import write_jsonl


def exports(data_dir: Path, kind: str) -> list[Path]:
    return sorted((data_dir / "exports" / kind).iterdir())


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


def test_telegram_media_types(data_dir: Path, store):
    import_file(store, str(data_dir / "exports" / "telegram" / "innerdvations_saved.json"))
    saved = store.messages("tg:saved:9999999999", limit=400)
    types = collections.Counter(m.type for m in saved)
    assert types[MessageType.IMAGE] and types[MessageType.VIDEO] and types[MessageType.VOICE]
    photo = next(m for m in saved if m.type == MessageType.IMAGE)
    assert photo.body.width == 904 and photo.body.remote_url.startswith("telegram-export:photos/")
    assert photo.ext["caption"].startswith("I'm a photo")
    assert any(m.type == MessageType.CUSTOM and m.body.event == "telegram.sticker" for m in saved)


def test_telegram_entity_arrays_read_as_text(data_dir: Path, store):
    import_file(store, str(data_dir / "exports" / "telegram" / "chatminer_single_export.json"))
    entities = store.search_messages("Link:")
    assert [m.body.text for m in entities] == ["Link:https://telegram.org/"]


def test_telegram_unexpected_keys_are_skipped_with_reasons(data_dir: Path, store):
    path = data_dir / "exports" / "telegram" / "innerdvations_error-unexpected.json"
    res = import_file(store, str(path))
    assert res.imported >= 10
    assert any("ERROR:wrong_type" in r for r in res.reasons)
    assert any("text is neither" in r for r in res.reasons)
    assert res.skipped == 3 and store.stats()["messages"] == res.imported


def test_telegram_owner_and_directions(data_dir: Path):
    with imstore.open(":memory:", user_id="Ben") as store:
        import_file(store, str(data_dir / "exports" / "telegram" / "innerdvations_bot.json"))
        msgs = store.messages("tg:9999999999")
        assert {m.direction for m in msgs} == {Direction.SEND, Direction.RECEIVE}


@pytest.mark.parametrize("name", ["chatminer_test_bracketed_mmddyy_24hrs.txt",
                                  "chatminer_test_ddmmyy_24hrs.txt",
                                  "chatminer_test_mmddyy_24hrs.txt",
                                  "chatminer_test_mmddyyyy_12hrs.txt",
                                  "chatminer_test_yyyymmdd_24hrs.txt"])
def test_whatsapp_layouts_and_locales_agree(data_dir: Path, name: str):
    path = data_dir / "exports" / "whatsapp" / name
    msgs = list(read_file(str(path), owner="John Doe"))
    assert len(msgs) == 9
    times = [m.local_time for m in msgs]
    assert times == [1546341900000, 1547983380000, 1548881340000, 1591804500000, 1592611680000,
                     1593508200000, 1639131000000, 1640002200000, 1640901660000]
    assert msgs[2].body.text == "Lorem ipsum dolor sit amet,\nconsectetur adipiscing elit. Duis libero."
    assert msgs[2].sender == "wa:Jahn Doe" and msgs[0].sender is None
    assert [m.type for m in msgs].count(MessageType.CUSTOM) == 2  # the two system lines
    assert msgs[7].sender == "wa:🤓" and msgs[6].sender == "wa:John Doe 🤓"
    assert all(m.chat_type == ChatType.GROUP_CHAT for m in msgs)


def test_whatsapp_media_location_and_one_to_one(tmp_path: Path):
    chat = tmp_path / "WhatsApp Chat with Bob.txt"
    (tmp_path / "IMG-20210101-WA0001.jpg").write_bytes(b"jpeg")
    chat.write_text(
        "[1/2/21, 9:05:01 PM] Bob: <Media omitted>\n"
        "[1/2/21, 9:06:00 PM] Me: IMG-20210101-WA0001.jpg (file attached)\n"
        "look at this\n"
        "[1/2/21, 9:07:00 PM] Bob: location: https://maps.google.com/?q=48.8584,2.2945\n"
        "[13/2/21, 9:08:00 AM] Bob: hello\n", encoding="utf-8")
    msgs = list(read_file(str(chat), owner="Me"))
    assert [m.type for m in msgs] == [MessageType.CUSTOM, MessageType.IMAGE, MessageType.LOCATION,
                                      MessageType.TEXT]
    assert all(m.chat_type == ChatType.CHAT for m in msgs)
    img = msgs[1]
    assert img.sender is None and img.body.local_path.endswith("IMG-20210101-WA0001.jpg")
    assert img.ext["caption"] == "look at this"
    assert (msgs[2].body.latitude, msgs[2].body.longitude) == (48.8584, 2.2945)
    assert msgs[3].local_time == 1613207280000  # 13 Feb 2021: day-first, 12-hour clock
    with imstore.open(":memory:", user_id="Me") as store:
        res = import_file(store, str(chat))
        assert res.imported == 4 and store.conversation("wa:Bob").unread_count == 0


def test_slack_export(data_dir: Path, store):
    path = data_dir / "exports" / "slack" / "slack-export-viewer_testarchive.zip"
    res = import_file(store, str(path))
    assert res.imported > 100
    assert import_file(store, str(path)).imported == 0
    convs = {c.conv_id for c in store.conversations()}
    assert {"slack:enrique", "slack:traveling-sailor"} <= convs
    files = store.messages_by_type(None, MessageType.FILE, limit=50)
    assert files and files[0].body.display_name.endswith(".js") and files[0].ext.get("comment")
    joins = [m for m in store.messages("slack:enrique", limit=400, direction=Direction.DOWN)
             if m.type == MessageType.CUSTOM]
    assert joins and joins[0].body.event == "slack.channel_join"
    bots = [m for m in store.messages("slack:traveling-sailor", limit=400)
            if m.sender and m.sender.startswith("slack:bot:")]
    assert bots and "new commit" in bots[0].body.text
    assert "<@" not in "".join(m.body.text for m in store.messages_by_type(None, MessageType.TEXT,
                                                                              limit=400))


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
        import_file(store, str(bad))
    assert "chat.txt" in err.value.description
    impossible = tmp_path / "chat2.txt"
    impossible.write_text("31/01/21, 10:00 - A: ok\n31/02/21, 10:00 - A: no such day\n")
    with pytest.raises(IMError) as err:
        import_file(store, str(impossible))
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
