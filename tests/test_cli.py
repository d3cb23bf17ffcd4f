"""The imstore command, driven as a person (and a script) would: in-process through `main`, and
as a real process only where a signal or a closed pipe is the point."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import imstore
from imstore import Direction, Message
from imstore.cli import Progress, build_parser, main

from .conftest import REPO
from .test_docs import subcommands
from .test_importers import DANA, DANA_MORE, write_account, write_slack, write_whatsapp


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def ndjson(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def exported_messages(path: Path) -> list[dict]:
    """The message lines of an export (not its store and conversation records)."""
    return [d for d in ndjson(path.read_text(encoding="utf-8")) if "record" not in d]


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name: str, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    assert name in capsys.readouterr().out


def test_every_import_option_is_documented():
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        for action in sp._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}" in text or f"{opt} " in text or f"[{opt}" in text, \
                        f"imstore {name} {opt} is missing from docs/cli.md"


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"imstore {imstore.__version__}"


# ------------------------------------------------------------------------ one person's exports


@pytest.fixture
def person(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "tg").mkdir()
    (tmp_path / "wa").mkdir()
    return {"store": tmp_path / "store", "tg": write_account(tmp_path / "tg"),
            "wa": write_whatsapp(tmp_path / "wa"),
            "wa2": write_whatsapp(tmp_path / "wa", "WhatsApp Chat with Dana (1).txt",
                                  DANA + DANA_MORE),
            "slack": write_slack(tmp_path / "slack.zip")}


def test_one_person_telegram_whatsapp_and_slack_in_one_store(person, capsys):
    store = str(person["store"])
    code, out, err = run(["import", str(person["tg"]), "--store", store], capsys)
    assert code == 0, err
    assert "created the store" in out and "tg:111" in out and "Ann Lee" in out
    code, out, err = run(["--store", store, "import", str(person["wa"]), "--me", "Ann",
                          "--tz", "UTC"], capsys)
    assert code == 0, err
    code, out, _ = run(["conversations", "--json", "--store", store], capsys)
    convs = {c["conv_id"]: c for c in json.loads(out)}
    assert len(convs) == 3
    assert {k: (c["title"], c["chat_type"]) for k, c in convs.items()} == {
        "tg:222": ("Bob Smith", "CHAT"), "tg:group:333": ("Hiking club", "GROUP_CHAT"),
        "wa:Dana": ("Dana", "CHAT")}
    for conv_id in convs:
        code, out, _ = run(["messages", conv_id, "--store", store, "--json", "--limit", "400"],
                           capsys)
        for m in ndjson(out):
            name = m["ext"].get("sender_name")
            assert (m["direction"] == "SEND") == (name in ("Ann Lee", "Ann")), m
    code, out, _ = run(["import", str(person["wa2"]), "--store", store, "--me", "Ann", "--tz",
                        "UTC", "--json"], capsys)
    assert json.loads(out)[str(person["wa2"])]["imported"] == 2
    code, out, _ = run(["import", str(person["slack"]), "--store", store, "--me", "ann",
                        "--json"], capsys)
    assert code == 0 and json.loads(out)[str(person["slack"])]["imported"] == 8
    code, out, _ = run(["conversations", "--store", store, "--json"], capsys)
    convs = {c["conv_id"]: c for c in json.loads(out)}
    assert convs["slack:U2"]["chat_type"] == "CHAT" and convs["slack:U2"]["title"] == "Bob Smith"
    assert convs["wa:Dana"]["messages"] == 9
    code, out, _ = run(["messages", "slack:U2", "--store", store, "--json"], capsys)
    assert [m["direction"] for m in ndjson(out)] == ["RECEIVE", "SEND"]
    code, out, _ = run(["stats", "--store", store, "--json"], capsys)
    assert json.loads(out)["owner"] == "tg:111" and json.loads(out)["messages"] == 8 + 9 + 8


def test_a_new_store_needs_an_owner(person, tmp_path: Path, capsys):
    unnamed = write_whatsapp(tmp_path, "chat.txt")
    code, _, err = run(["import", str(unnamed), "--store", str(person["store"]), "--tz", "UTC"],
                       capsys)
    assert code == 2 and "--me" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(["import", str(unnamed), "--store", str(person["store"]), "--tz", "UTC",
                          "--user", "ann", "--me", "Ann"], capsys)
    assert code == 0, err
    code, out, err = run(["import", str(person["wa"]), "--store", str(person["store"]), "--tz",
                          "UTC", "--user", "Ann"], capsys)
    assert code == 0 and "read as your name" in out


def test_names_ids_and_times_are_shown(person, capsys, monkeypatch):
    store = str(person["store"])
    run(["import", str(person["tg"]), "--store", store], capsys)
    code, out, _ = run(["conversations", "--store", store, "--utc"], capsys)
    assert "tg:222  Bob Smith  CHAT" in out and "UTC" in out
    code, out, _ = run(["messages", "tg:222", "--store", store, "--utc"], capsys)
    lines = out.splitlines()
    assert lines[0] == "tg:222 (Bob Smith), CHAT"
    assert "2021-03-01 10:00 UTC  Bob Smith (tg:222): hi Ann" in lines[1]
    assert "Ann Lee (me): [reply] hi Bob [edited]" in lines[2]
    assert "duration_seconds=65" in lines[3]
    first_id = lines[1].split()[0]
    code, out, _ = run(["messages", "tg:222", "--store", store, "--before", lines[2].split()[0]],
                       capsys)
    assert code == 0 and out.splitlines()[1].split()[0] == first_id and len(out.splitlines()) == 2
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        code, out, _ = run(["messages", "tg:222", "--store", store], capsys)
        assert "2021-03-01 19:00 JST  Bob Smith" in out
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_search_shows_the_conversation_and_pages(person, capsys):
    store = str(person["store"])
    run(["import", str(person["tg"]), "--store", store], capsys)
    code, out, _ = run(["search", "hi", "--store", store, "--utc"], capsys)
    assert "tg:222 (Bob Smith)" in out and len(out.splitlines()) == 2
    code, out, _ = run(["search", "hi", "--store", store, "--limit", "1", "--json"], capsys)
    (newest,) = ndjson(out)
    assert newest["body"]["text"] == "hi Bob" and newest["title"] == "Bob Smith"
    code, out, _ = run(["search", "hi", "--store", store, "--limit", "1", "--json", "--before",
                        newest["msg_id"]], capsys)
    assert [m["body"]["text"] for m in ndjson(out)] == ["hi Ann"]
    code, out, _ = run(["search", "Carl", "--store", store, "--scope", "ext", "--json"], capsys)
    assert [m["body"]["text"] for m in ndjson(out)] == ["me!"]
    code, out, _ = run(["search", "Carl", "--store", store, "--json"], capsys)
    assert code == 0 and ndjson(out) == []
    code, out, _ = run(["search", "hi", "--store", store, "--conv", "tg:group:333"], capsys)
    assert code == 0 and out.strip() == "(no messages)"


def test_search_any_of_several_keywords_and_counts_per_conversation(person, capsys):
    store = str(person["store"])
    run(["import", str(person["tg"]), "--store", store], capsys)
    run(["import", str(person["wa"]), "--store", store, "--me", "Ann", "--tz", "UTC"], capsys)
    code, out, _ = run(["search", "hi", "hey", "--store", store, "--json"], capsys)
    assert code == 0 and ndjson(out) == []  # both keywords: no message has both
    code, out, _ = run(["search", "hi", "hey", "--any", "--store", store, "--json"], capsys)
    assert sorted(m["body"]["text"] for m in ndjson(out)) == [
        "hey Ann", "hey Dana\nhow are you", "hi Ann", "hi Bob"]
    code, out, _ = run(["search", "hey dana", "hi", "--any", "--store", store, "--json"], capsys)
    assert sorted(m["body"]["text"] for m in ndjson(out)) == [
        "hey Dana\nhow are you", "hi Ann", "hi Bob"]  # a quoted keyword's words all match
    code, out, _ = run(["search", "hi", "hey", "--any", "--counts", "--store", store, "--json"],
                       capsys)
    counts = ndjson(out)
    assert [(c["conv_id"], c["title"], c["count"], c["capped"]) for c in counts] == [
        ("tg:222", "Bob Smith", 2, False), ("wa:Dana", "Dana", 2, False)]  # newest first
    assert [c["newest"]["body"]["text"] for c in counts] == ["hi Bob", "hey Dana\nhow are you"]
    code, out, _ = run(["search", "hi", "hey", "--any", "--counts", "--store", store, "--utc"],
                       capsys)
    assert out.splitlines() == [
        "tg:222 (Bob Smith)  2 hits, newest 2021-03-01 10:01 UTC  Ann Lee (me): [reply] hi Bob "
        "[edited]",
        "wa:Dana (Dana)  2 hits, newest 2021-03-01 09:02 UTC  Ann (me): hey Dana how are you"]
    code, out, _ = run(["search", "hey", "--counts", "--conv", "wa:Dana", "--store", store,
                        "--json"], capsys)
    assert [(c["conv_id"], c["count"]) for c in ndjson(out)] == [("wa:Dana", 2)]
    code, out, _ = run(["search", "nothing", "--counts", "--store", store], capsys)
    assert code == 0 and out.strip() == "(no messages)"


@pytest.mark.parametrize("until, hits", [("2021-03-01", 2), ("2021-02-28", 0),
                                         ("2021-03-01T10:00:30", 1), ("1614592800000", 1)])
def test_until_a_date_includes_that_day(person, capsys, until: str, hits: int):
    store = str(person["store"])
    run(["import", str(person["tg"]), "--store", store], capsys)
    code, out, err = run(["search", "hi", "--store", store, "--utc", "--until", until, "--json"],
                         capsys)
    assert code == 0, err
    assert len(ndjson(out)) == hits


def test_global_options_before_or_after_the_command(person, capsys):
    store = str(person["store"])
    run(["import", str(person["tg"]), "--store", store], capsys)
    before = run(["--json", "--store", store, "stats"], capsys)
    after = run(["stats", "--json", "--store", store], capsys)
    assert before == after and json.loads(before[1])["messages"] == 8


def test_import_search_export_reimport(data_dir: Path, tmp_path: Path, capsys):
    store = str(tmp_path / "chats")
    tg = str(data_dir / "exports" / "telegram" / "innerdvations_saved.json")
    code, out, _ = run(["import", tg, "--store", store, "--user", "Ben"], capsys)
    assert code == 0 and "imported" in out
    code, out, _ = run(["conversations", "--store", store, "--json"], capsys)
    convs = json.loads(out)
    assert convs[0]["conv_id"] == "tg:saved:9999999999" and convs[0]["title"] == "Saved Messages"
    code, out, _ = run(["search", "photo", "--store", store, "--json"], capsys)
    hits = ndjson(out)
    assert hits and all("photo" in json.dumps(h).lower() for h in hits)
    code, out, _ = run(["messages", "tg:saved:9999999999", "--limit", "5", "--store", store], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 1 + 5 + 1  # title, 5, "(more: ...)"
    export = tmp_path / "all.jsonl"
    code, out, _ = run(["export", "--store", store, "--output", str(export)], capsys)
    n = len(exported_messages(export))
    assert code == 0 and n > 10
    code, out, _ = run(["import", str(export), "--store", str(tmp_path / "copy"), "--user", "Ben",
                        "--json"], capsys)
    assert json.loads(out)[str(export)]["imported"] == n
    code, out, _ = run(["stats", "--store", store, "--json"], capsys)
    assert json.loads(out)["messages"] == n
    assert json.loads(out)["search_pending"] == 0  # the import waited for its index
    code, out, _ = run(["reindex", "--store", store], capsys)
    assert f"{n} messages indexed" in out
    code, out, _ = run(["verify", "--store", store], capsys)
    assert "all consistent" in out


def test_a_folder_of_exports_with_keep_going(person, tmp_path: Path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "tg").mkdir()
    write_account(folder / "tg")
    (folder / "tg" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    write_whatsapp(folder, "WhatsApp Chat with Dana.txt")
    (folder / "broken.json").write_text('{"messages": [', encoding="utf-8")
    store = str(person["store"])
    code, out, err = run(["import", str(folder), "--store", store, "--me", "Ann", "--tz", "UTC"],
                         capsys)
    assert code == 2 and "broken.json" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(["import", str(folder), "--store", store, "--me", "Ann", "--tz", "UTC",
                          "--keep-going", "--json"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    results = json.loads(out)
    assert "error" in results[str(folder / "broken.json")]
    assert results[str(folder / "tg" / "result.json")]["imported"] == 8
    assert results[str(folder / "WhatsApp Chat with Dana.txt")]["duplicates"] == 7
    assert str(folder / "tg" / "photo.jpg") not in results


def test_the_demo_fits_one_screen_and_shows_each_search_s_scope(capsys):
    code, out, _ = run(["demo"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and lines[-1] == "demo: 28 checks passed, 0 failed"
    assert len(lines) <= 54, len(lines)  # the walkthrough, not a log: events are counted
    searches = [line for line in lines if line.lstrip().startswith("search ")]
    assert searches and all(" in CONTENT: " in x or " in EXT: " in x for x in searches)
    assert not any("old message" in line for line in lines[1:]) or len(
        [x for x in lines if "old message" in x]) == 1


def test_demo_json(capsys):
    code, out, _ = run(["demo", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["failed"] == 0 and data["passed"] == len(data["checks"]) > 10


def test_max_payload_is_an_import_option(tmp_path: Path, capsys):
    chat = write_whatsapp(tmp_path, "WhatsApp Chat with Li.txt",
                          f"01/03/2021, 09:01 - Li: {'长' * 1200}\n13/03/2021, 09:02 - Ann: ok\n")
    store = str(tmp_path / "s")
    code, out, _ = run(["import", str(chat), "--store", store, "--me", "Ann", "--tz", "UTC",
                        "--json"], capsys)
    assert code == 0 and json.loads(out)[str(chat)]["skipped"] == 1
    code, out, _ = run(["import", str(chat), "--store", store, "--me", "Ann", "--tz", "UTC",
                        "--max-payload", "8192", "--json"], capsys)
    assert code == 0 and json.loads(out)[str(chat)]["imported"] == 1


# ------------------------------------------------------------------------------------ errors


def test_export_to_a_file_with_a_wrong_store_leaves_the_file_alone(person, tmp_path: Path, capsys):
    target = tmp_path / "keep.jsonl"
    target.write_text("precious\n", encoding="utf-8")
    code, _, err = run(["export", "-o", str(target), "--store", str(tmp_path / "typo")], capsys)
    assert code == 2 and "holds no store" in err
    assert target.read_text(encoding="utf-8") == "precious\n"
    run(["import", str(person["tg"]), "--store", str(person["store"])], capsys)
    code, _, err = run(["export", "nope", "-o", str(target), "--store", str(person["store"])], capsys)
    assert code == 2 and target.read_text(encoding="utf-8") == "precious\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".keep")] == []
    code, _out, _ = run(["export", "-o", str(target), "--store", str(person["store"])], capsys)
    assert code == 0 and len(exported_messages(target)) == 8


def _latin1(tmp_path: Path) -> Path:
    return write_whatsapp(tmp_path, "WhatsApp Chat with José.txt",
                          "01/03/2021, 09:01 - José: olá\n13/03/2021, 09:02 - Ann: oi\n",
                          encoding="latin-1")


ERRORS = [
    # (argv with {store}/{tmp}/{tg}, what stderr says)
    (["conversations", "--store", "{tmp}/none"], "holds no store"),
    (["conversations", "--store", "{tg}"], "not a store directory"),
    (["search", "  ", "--store", "{store}"], "keyword is empty"),
    (["search", "hi", "--since", "yesterday", "--store", "{store}"], "--since 'yesterday'"),
    (["search", "hi", "--until", "2021-13-01", "--store", "{store}"], "--until"),
    (["search", "hi", "--limit", "0", "--store", "{store}"], "QUERY_PARAM_REACHES_LIMIT"),
    (["search", "hi", "--before", "no-such-id", "--store", "{store}"], "no-such-id"),
    (["search", "a", "b", "c", "d", "e", "f", "--store", "{store}"], "1 to 5 keywords"),
    (["search", "hi", "--counts", "--before", "x", "--store", "{store}"], "leave out --before"),
    (["messages", "nope", "--store", "{store}"], "no conversation 'nope'"),
    (["messages", "tg:222", "--before", "nope", "--store", "{store}"], "nope"),
    (["import", "{tmp}/missing.json", "--store", "{store}"], "missing.json"),
    (["import", "{tmp}/bad.json", "--store", "{store}"], "bad.json, line 1"),
    (["import", "{tmp}/photo.jpg", "--store", "{store}"], "photo.jpg: not a chat export"),
    (["import", "{latin1}", "--store", "{store}", "--me", "Ann", "--tz", "UTC"], "--encoding"),
    (["import", "{latin1}", "--store", "{store}", "--encoding", "klingon"], "klingon"),
    (["import", "{wa}", "--store", "{store}", "--tz", "Mars/Base"], "Mars/Base"),
    (["import", "{tmp}/us.txt", "--store", "{store}", "--me", "A", "--tz", "UTC",
      "--date-order", "dmy"], "--date-order dmy does not fit"),
    (["import", "{wa}", "--store", "{store}", "--max-payload", "0"], "--max-payload"),
    (["import", "{wa}", "--store", "{store}", "--date-order", "xyz"], "--date-order"),
    (["import", "{empty}", "--store", "{store}/sub"], "no chat export in this folder"),
    (["export", "-o", "{tmp}/no/such/dir/x.jsonl", "--store", "{store}"], "no folder"),
    (["frobnicate"], "invalid choice"),
    (["search"], "KEYWORD"),
]


@pytest.mark.parametrize("argv, says", ERRORS, ids=[" ".join(a[:2]) + f" {i}"
                                                    for i, (a, _) in enumerate(ERRORS)])
def test_every_error_is_one_line_and_exit_2(person, tmp_path: Path, capsys, argv, says):
    run(["import", str(person["tg"]), "--store", str(person["store"])], capsys)
    work = tmp_path / "work"
    work.mkdir()
    (work / "bad.json").write_text("{not json", encoding="utf-8")
    (work / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    (work / "us.txt").write_text("02/13/21, 10:00 - A: x\n", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("not an export", encoding="utf-8")
    values = {"store": str(person["store"]), "tmp": str(work), "tg": str(person["tg"]),
              "wa": str(person["wa"]), "latin1": str(_latin1(work)), "empty": str(empty)}
    code, out, err = run([a.format(**values) for a in argv], capsys)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("imstore: error") and "Traceback" not in err
    assert says in err


def test_permission_lock_and_unexpected_errors_are_one_line(person, monkeypatch, capsys):
    store = str(person["store"])
    run(["import", str(person["tg"]), "--store", store], capsys)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(store)
                        else real_access(p, mode))
    code, _, err = run(["stats", "--store", store], capsys)
    assert code == 2 and "permission denied" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(os, "access", real_access)

    import peewee

    def locked(*a, **kw):
        raise peewee.OperationalError("database is locked")

    monkeypatch.setattr(imstore.MessageStore, "open", classmethod(lambda cls, *a, **kw: locked()))
    code, _, err = run(["stats", "--store", store], capsys)
    assert code == 2 and "locked by another process" in err and len(err.splitlines()) == 1

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied", store + "/imstore.db")

    monkeypatch.setattr(imstore.MessageStore, "open", classmethod(lambda cls, *a, **kw: denied()))
    code, _, err = run(["stats", "--store", store], capsys)
    assert code == 2 and err.strip() == f"imstore: error: permission denied: {store}/imstore.db"


def test_without_the_cli_extra_telegram_says_what_to_install(person, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "imstore.importers.telegram")
    monkeypatch.setitem(sys.modules, "ijson", None)
    code, _, err = run(["import", str(person["tg"]), "--store", str(person["store"])], capsys)
    assert code == 2 and "pip install 'imstore[cli]'" in err and len(err.splitlines()) == 1


def test_a_locked_store_is_one_line(person, monkeypatch, capsys):
    store = str(person["store"])
    run(["import", str(person["tg"]), "--store", store], capsys)
    monkeypatch.setenv("IMSTORE_LOCK_TIMEOUT", "0.05")
    holder = sqlite3.connect(os.path.join(store, "imstore.db"), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        code, _, err = run(["stats", "--store", store], capsys)
        code2, _, err2 = run(["import", str(person["wa"]), "--store", store, "--me", "Ann"], capsys)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for c, e in ((code, err), (code2, err2)):
        assert c == 2 and "locked by another process" in e and len(e.strip().splitlines()) == 1


@pytest.mark.skipif(not hasattr(imstore.MessageStore, "stored_owner"),
                    reason="the store keeps its Limits from the store-parts rewrite (issue 10) on")
def test_the_store_remembers_its_payload_limit(tmp_path: Path, capsys):
    chat = write_whatsapp(tmp_path, "WhatsApp Chat with Li.txt",
                          f"01/03/2021, 09:01 - Li: {'长' * 1200}\n13/03/2021, 09:02 - Ann: ok\n")
    store = str(tmp_path / "s")
    code, _, err = run(["import", str(chat), "--store", store, "--me", "Ann", "--tz", "UTC",
                        "--max-payload", "8192"], capsys)
    assert code == 0, err
    long2 = write_whatsapp(tmp_path, "WhatsApp Chat with Li (1).txt",
                           f"01/03/2021, 09:01 - Li: {'长' * 1200}\n13/03/2021, 09:02 - Ann: ok\n"
                           f"14/03/2021, 09:01 - Li: {'短' * 1200}\n")
    code, out, _ = run(["import", str(long2), "--store", store, "--me", "Ann", "--tz", "UTC",
                        "--json"], capsys)
    assert json.loads(out)[str(long2)]["imported"] == 1
    assert imstore.MessageStore.stored_owner(store) == "wa:Ann"


def test_progress_is_a_bar_on_a_terminal_and_quiet_otherwise(monkeypatch, capsys):
    class Tty:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            self.text += s
            return len(s)

        def flush(self) -> None:
            pass

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = Progress("importing x", 5000)
    bar(1000)
    bar(5000)
    bar.close()
    assert "importing x" in tty.text and "/5.00k" in tty.text and "msg/s" in tty.text
    monkeypatch.undo()
    quick = Progress("importing y", 10)
    quick(10)
    quick.close()
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------- real processes: pipes, Ctrl-C


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_a_closed_pipe_is_one_line_not_a_traceback(tmp_path: Path):
    chat = write_whatsapp(tmp_path, "WhatsApp Chat with Dana.txt",
                          "".join(f"13/03/2021, 10:{i % 60:02} - {'Ann' if i % 2 else 'Dana'}: "
                                  f"line {i} {'x' * 200}\n" for i in range(3000)))
    store = str(tmp_path / "s")
    assert main(["import", str(chat), "--store", store, "--me", "Ann", "--tz", "UTC"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "imstore.cli", "export", "--store", store],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "broken pipe" in err


_HOLD_AT_FIRST_BATCH = """
import sys
from imstore.cli import _progress
plain = _progress.Progress.__call__
def held(self, done):
    plain(self, done)
    if self.label.startswith("importing") and not getattr(held, "once", False):
        held.once = True
        sys.stdin.buffer.read()  # the test sends Ctrl-C, then closes stdin
_progress.Progress.__call__ = held
sys.argv = ["imstore", *sys.argv[1:]]
import _imstore_cli
sys.exit(_imstore_cli.main())
"""


@pytest.mark.slow
def test_ctrl_c_stops_an_import_cleanly(tmp_path: Path):
    # The import holds after its first batch (it printed its first progress line) until the test
    # has sent Ctrl-C and closed stdin: the signal is pending before the import can go on, so it
    # never finishes first, whatever the machine's load.
    chat = tmp_path / "WhatsApp Chat with Dana.txt"
    chat.write_text("".join(
        f"{1 + d:02}/0{1 + m}/2021, {h:02}:{mi:02} - {'Ann' if mi % 3 else 'Dana'}: m {m} {d} {h} {mi}\n"
        for m in range(3) for d in range(28) for h in range(24) for mi in range(0, 60, 2)),
        encoding="utf-8")
    driver = tmp_path / "hold.py"
    driver.write_text(_HOLD_AT_FIRST_BATCH, encoding="utf-8")
    store = str(tmp_path / "s")
    proc = subprocess.Popen([sys.executable, str(driver), "import", str(chat), "--store", store,
                             "--me", "Ann", "--tz", "UTC"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**_env(), "IMSTORE_PROGRESS_EVERY": "0"})
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        for raw in proc.stderr:  # ends early only if the import died before its first batch
            lines.append(raw.decode())
            if lines[-1].startswith("importing"):
                break
        assert lines and lines[-1].startswith("importing"), "".join(lines)
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(b"", timeout=300)  # closes stdin: the import goes on
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    lines.append(rest.decode())
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert "interrupted" in out.decode()
    with imstore.open(store, user_id="wa:Ann") as s:
        stored = s.stats()["messages"]
        assert 0 < stored < 60_480 and s.verify().ok
        assert {m.direction for m in s.messages("wa:Dana", limit=400)} == {Direction.SEND,
                                                                            Direction.RECEIVE}


# ------------------------------------------------------------------ export -> import: lossless


def _rich_store(path: Path) -> None:
    """A store with a bit of everything an export must keep."""
    from imstore import ChatType, GroupReadAck
    from imstore.message import TextBody

    t = 1_600_000_000_000
    with imstore.open(path, user_id="alice") as s:
        sent = Message.text("bob", "hello bob", timestamp=t, ext={"k": b"\x00\x01", "n": [1, {}]})
        sent.status = imstore.MessageStatus.INPROGRESS  # as the client stores a send
        s.insert_message(sent)
        s.mark_sent(sent.msg_id, "S1", t + 5)
        s.apply_receipts(1, ["S1"])
        s.apply_receipts(2, ["S1"])
        img = Message.image("alice", "/nowhere/a.png", sender="bob", timestamp=t + 12, width=4,
                            height=3)
        img.body.local_path, img.body.remote_url = "", "https://example.org/a.png"
        img.body.caption = "the view from here"
        s.import_messages([
            Message.text("alice", "from bob", sender="bob", timestamp=t + 10, is_read=False),
            Message.text("alice", "read one", sender="bob", timestamp=t + 11, is_read=True),
            img,
            Message.location("bob", 1.5, 2.5, address="here", timestamp=t + 13),
            Message.custom("team", "poll", {"q": "lunch?"}, chat_type=ChatType.GROUP_CHAT,
                           timestamp=t + 14, need_group_ack=True, msg_id="G1"),
            Message.text("team", "to be recalled", sender="carol", msg_id="R1",
                         chat_type=ChatType.GROUP_CHAT, timestamp=t + 15),
            Message.text("team", "to be edited", sender="carol", msg_id="E1",
                         chat_type=ChatType.GROUP_CHAT, timestamp=t + 16, is_read=False),
            Message.text("team", "a reply in a thread", sender="bob", msg_id="T1",
                         chat_type=ChatType.GROUP_CHAT, timestamp=t + 17, reply_to="E1",
                         thread_id="E1", formatted="<b>a reply</b> in a thread"),
        ])
        s.set_local_ext("T1", {"seen_on": "laptop"})
        s.apply_reaction("E1", "👍", "bob", reaction_id="$r1", timestamp=t + 70)
        s.apply_reaction("E1", "👍", timestamp=t + 72)
        s.apply_reaction("E1", "🎉", "carol", timestamp=t + 71)
        for i in range(25):  # more senders than `reactions` lists
            s.apply_reaction("G1", "+1", f"u{i:02}", reaction_id=f"$g{i}", timestamp=t + 80 + i)
        s.apply_reaction("T1", "👀", "carol", timestamp=t + 90)  # on a thread reply
        s.apply_message_pin("E1", timestamp=t + 60, pinned_by="carol")
        s.apply_message_pin("G1", timestamp=t + 61)
        s.insert_message(Message.text("team", "a reply to a root not stored here", sender="bob",
                                      msg_id="T2", chat_type=ChatType.GROUP_CHAT,
                                      timestamp=t + 18, thread_id="GONE"))
        s.add_group_acks([GroupReadAck("G1", "team", "bob", t + 20)])
        s.apply_recall(["R1"], t + 30)
        s.apply_edit("E1", TextBody("edited text"), t + 31)
        s.save_conversation("team", ChatType.GROUP_CHAT, last_activity=t + 40,
                            ext={"pinned": True})
        s.set_conversation_title("team", "The team")
        s.save_conversation("empty", ChatType.CHAT_ROOM, last_activity=t + 1,
                            ext={"title": "Nobody spoke"})
        s.set_conversation_ext("bob", {"k": "v"})
        s.set_conversation_title("bob", "Bob B.")
        s.set_draft("bob", "see you")
        s.pin_conversation("team", timestamp=t + 50)
        s.set_conversation_marks("team", add=["work", "unread"])




def _everything(path: Path) -> tuple[list, list]:
    from imstore.importers.jsonl import conversation_record, to_dict

    with imstore.open(path, user_id=imstore.MessageStore.stored_owner(path) or "?") as s:
        convs = sorted(s.conversations(), key=lambda c: c.conv_id)
        msgs = [{**to_dict(m), "reactions": s.reactions(m.msg_id),
                 "reaction_records": s.reaction_records([m.msg_id])}
                for c in convs for m in s.messages(c.conv_id, limit=400)]
        msgs += [{"pins": [m.msg_id for m in s.pinned_messages(c.conv_id)],
                  "pin_records": s.pin_records(c.conv_id)} for c in convs]
        msgs += [{**to_dict(m), "reaction_records": s.reaction_records([m.msg_id])}
                 for c in convs for root in s.threads(c.conv_id, limit=400)
                 for m in s.thread_messages(root.root, limit=400)]
        msgs += [{"threads": [(t.root, t.reply_count, t.last_reply and t.last_reply.msg_id)
                              for t in s.threads(c.conv_id)]} for c in convs]
        return ([(conversation_record(c), c.unread_count) for c in convs], msgs)


def test_export_then_import_reproduces_the_store_field_by_field(tmp_path: Path, capsys):
    src, copy, out = tmp_path / "src", tmp_path / "copy", tmp_path / "all.jsonl"
    _rich_store(src)
    code, _, err = run(["export", "--store", str(src), "-o", str(out)], capsys)
    assert code == 0, err
    code, text, err = run(["import", str(out), "--store", str(copy), "--json"], capsys)
    assert code == 0, err
    result = json.loads(text)[str(out)]
    assert (result["imported"], result["skipped"]) == (10, 0), result
    assert imstore.MessageStore.stored_owner(copy) == "alice"  # the owner came with the export
    (convs_a, msgs_a), (convs_b, msgs_b) = _everything(src), _everything(copy)
    assert len(msgs_a) == 8 + 3 + 2 + 3 and len(convs_a) == 3
    for a, b in zip(msgs_a, msgs_b, strict=True):
        for field in a:
            assert a[field] == b[field], (a.get("msg_id"), field)
    assert convs_a == convs_b
    by_id = {m["msg_id"]: m for m in msgs_b if "msg_id" in m}
    assert {r.key: r.count for r in by_id["E1"]["reactions"]} == {"👍": 2, "🎉": 1}
    t = 1_600_000_000_000
    assert [(r.key, r.sender, r.reaction_id, r.timestamp) for r in by_id["E1"]["reaction_records"]
            ] == [("👍", "bob", "$r1", t + 70), ("🎉", "carol", None, t + 71),
                  ("👍", "alice", None, t + 72)]
    assert len(by_id["G1"]["reaction_records"]) == 25 and by_id["G1"]["reactions"][0].count == 25
    assert [r.key for r in by_id["T1"]["reaction_records"]] == ["👀"]
    pins = next(m for m in msgs_b if m.get("pins"))
    assert pins["pins"] == ["G1", "E1"]
    assert [(p.msg_id, p.pinned_at, p.pinned_by) for p in pins["pin_records"]] == [
        ("G1", t + 61, None), ("E1", t + 60, "carol")]
    assert ("GONE", 1, "T2") in next(m for m in msgs_b if m.get("threads") and
                                     len(m["threads"]) == 2)["threads"]
    img = next(m for m in msgs_b if m.get("type") == "IMAGE")
    assert img["body"]["caption"] == "the view from here"
    assert by_id["T1"]["body"]["formatted"] == "<b>a reply</b> in a thread"
    assert by_id["T1"]["reply_to"] == "E1"
    team = next(rec for rec, _unread in convs_b if rec["conv_id"] == "team")
    assert team["title"] == "The team" and team["pinned_at"] == t + 50
    assert team["marks"] == ["unread", "work"]
    assert next(rec for rec, _u in convs_b if rec["conv_id"] == "bob")["draft"] == "see you"
    assert by_id["R1"]["recalled_at"] and by_id["E1"]["edited_at"]
    assert by_id["E1"]["body"]["text"] == "edited text"
    assert by_id["S1"]["local_id"] and by_id["S1"]["is_read_acked"]
    assert by_id["G1"]["group_ack_count"] == 1
    assert by_id["T1"]["thread_id"] == "E1" and by_id["T1"]["local_ext"] == {"seen_on": "laptop"}


def test_export_skips_and_counts_an_undecodable_message_and_verify_lists_it(tmp_path: Path,
                                                                            capsys):
    store, out = tmp_path / "s", tmp_path / "out.jsonl"
    with imstore.open(store, user_id="alice") as s:
        s.import_messages([Message.text("alice", f"m{i}", sender="bob", msg_id=f"m{i}",
                                        timestamp=1_600_000_000_000 + i) for i in range(3)]
                          + [Message.text("alice", "hi", sender="carol", msg_id="c1",
                                          timestamp=1_600_000_000_100)])
    db = sqlite3.connect(store / "imstore.db")
    db.execute("UPDATE message SET body = X'01C1C1' WHERE msg_id = 'm1'")
    db.execute("UPDATE conversation SET ext = X'C1FF' WHERE conv_id = 'carol'")
    db.commit()
    db.close()
    code, text, err = run(["export", "--store", str(store), "-o", str(out)], capsys)
    assert code == 0, err
    assert "3 messages written" in text and "left out 1 message(s)" in text
    assert sorted(m["msg_id"] for m in exported_messages(out)) == ["c1", "m0", "m2"]
    code, text, err = run(["export", "--store", str(store), "--json", "-o", str(out)], capsys)
    assert json.loads(text)["undecodable"] == 1
    code, text, _ = run(["verify", "--store", str(store)], capsys)
    assert "undecodable messages" in text and "m1" in text
    assert "unreadable conversations" in text and "carol" in text
    code, text, _ = run(["verify", "--store", str(store), "--json"], capsys)
    report = json.loads(text)
    assert report["undecodable"] == ["m1"] and report["unreadable_conversations"] == ["carol"]


def test_what_importers_mapped_survives_export_and_import(tmp_path: Path, capsys):
    src, copy, out = tmp_path / "src", tmp_path / "copy", tmp_path / "all.jsonl"
    (tmp_path / "tg").mkdir()
    code, _, err = run(["import", str(write_account(tmp_path / "tg")),
                        str(write_slack(tmp_path / "s.zip")), "--me", "ann", "--store", str(src)],
                       capsys)
    assert code == 0, err
    run(["export", "--store", str(src), "-o", str(out)], capsys)
    code, _, err = run(["import", str(out), "--store", str(copy)], capsys)
    assert code == 0, err

    def state(path: Path) -> tuple[list, list, list]:
        with imstore.open(path, user_id="tg:111") as s:
            convs = [c.conv_id for c in s.conversations()]
            msgs = [m for c in convs for m in s.messages(c, limit=400)]
            msgs += [m for c in convs for t in s.threads(c) for m in s.thread_messages(t.root)]
            return (sorted((m.msg_id, m.reply_to, m.thread_id, m.body) for m in msgs),
                    sorted(s.reaction_records([m.msg_id for m in msgs]),
                           key=lambda r: (r.msg_id, r.timestamp, r.key, r.sender)),
                    [s.pin_records(c) for c in convs])

    before, after = state(src), state(copy)
    assert before == after
    assert len(before[1]) >= 8 and sum(map(len, before[2])) == 2  # a Telegram and a Slack pin
    assert any(t for _id, _r, t, _b in before[0])  # the Slack thread reply


def test_an_export_with_more_threads_than_a_page_asks_each_message(tmp_path: Path):
    from imstore.importers.jsonl import export_store

    with imstore.open(":memory:", user_id="alice") as s:
        for i in range(3):
            s.insert_message(Message.text("bob", f"root {i}", msg_id=f"r{i}", timestamp=10 + i))
            s.insert_message(Message.text("bob", f"reply {i}", msg_id=f"t{i}", timestamp=20 + i,
                                          thread_id=f"r{i}"))
        # each page, then the replies of its roots: with a page of 2, the 3 threads are more
        # than a page, and every message is asked for its replies
        for page, want in ((2, ["r0", "r1", "t0", "t1", "r2", "t2"]),
                           (400, ["r0", "r1", "r2", "t0", "t1", "t2"])):
            out = io.StringIO()
            assert export_store(s, out, ["bob"], page=page).written == 6
            assert [d["msg_id"] for d in ndjson(out.getvalue()) if "record" not in d] == want


def test_every_message_and_conversation_field_is_exported():
    import dataclasses

    from imstore.importers.jsonl import conversation_record, to_dict

    m = Message.text("bob", "x", timestamp=5)
    assert set(to_dict(m)) == {f.name for f in dataclasses.fields(Message)}
    conv = imstore.Conversation("bob", imstore.ChatType.CHAT, 2, m, 7, {"title": "B"})
    rec = conversation_record(conv)
    public = {n for n in imstore.Conversation.__slots__ if not n.startswith("_")}
    derived = {"unread_count", "error"}  # from the messages' read state; an unreadable row
    assert set(rec) - {"record"} == public - derived


def test_export_refuses_an_output_inside_the_store(person, capsys):
    store = person["store"]
    run(["import", str(person["tg"]), "--store", str(store)], capsys)
    db = store / "imstore.db"
    before = db.read_bytes()
    for target in (db, store / "x.jsonl", store / "search" / ".." / "y.jsonl"):
        code, _, err = run(["export", "--store", str(store), "-o", str(target)], capsys)
        assert code == 2 and "inside the store" in err, err
    assert db.read_bytes() == before
    code, _, _ = run(["stats", "--store", str(store)], capsys)
    assert code == 0


def test_a_new_store_takes_its_owner_from_me_in_a_telegram_export_without_ids(
        data_dir: Path, tmp_path: Path, capsys):
    src = str(data_dir / "exports" / "telegram" / "chatminer_batch_export.json")
    store = str(tmp_path / "s")
    code, out, err = run(["import", src, "--store", store, "--me", "Author 1"], capsys)
    assert code == 0, err
    assert "created the store" in out and "tg:Author 1" in out and "wrote nothing" not in out
    code, out, _ = run(["messages", "tg:group:Chatname", "--store", store, "--json"], capsys)
    assert [m["direction"] for m in ndjson(out)] == ["SEND", "RECEIVE"]


@pytest.mark.slow
def test_the_bar_is_drawn_on_a_terminal_that_reports_no_size(tmp_path: Path):
    import fcntl
    import pty
    import struct
    import termios

    chat = write_whatsapp(tmp_path, "WhatsApp Chat with Dana.txt",
                          "".join(f"13/03/2021, 10:{i % 60:02} - {'Ann' if i % 2 else 'Dana'}: line {i}\n"
                                  for i in range(3000)))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "imstore.cli", "import", str(chat), "--store",
                             str(tmp_path / "s"), "--me", "Ann", "--tz", "UTC"],
                            stdout=subprocess.DEVNULL, stderr=slave, env=_env())
    os.close(slave)
    drawn = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"importing WhatsApp Chat with Dana.txt" in drawn and b"msg/s" in drawn


def test_the_plain_counter_shows_the_indexer_s_estimate(monkeypatch, capsys):
    monkeypatch.setenv("IMSTORE_PROGRESS_EVERY", "0")
    bar = Progress("indexing", 1000)
    bar.estimate(12.4)
    bar(0)
    bar.close()
    err = capsys.readouterr().err
    assert "indexing: 0/1,000" in err and "about 12 s left" in err


# The console script driven to a Ctrl-C at a chosen moment: a profile hook counts the Python calls
# from the script's first line on and sends the process SIGINT at call N -- the signal then
# arrives exactly where a person's Ctrl-C could, without any timing. N=0 only counts (the count
# is written at the very end of the process).
_DRIVER = """
import atexit, os, signal, sys
n, count_file, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
count = 0
def profile(frame, event, arg):
    global count
    if event == "call":
        count += 1
        if count == n:
            sys.setprofile(None)
            os.kill(os.getpid(), signal.SIGINT)
def written():
    with open(count_file, "w") as f:
        f.write(str(count))
atexit.register(written)
sys.argv = ["imstore", *argv]
import _imstore_cli
sys.setprofile(profile)
sys.exit(_imstore_cli.main())
"""


@pytest.mark.slow
def test_ctrl_c_at_any_moment_prints_no_traceback(tmp_path: Path):
    chat = write_whatsapp(tmp_path, "WhatsApp Chat with Dana.txt")
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER, encoding="utf-8")
    counted = tmp_path / "count"

    def run_to(n: int, store: str) -> tuple[int, str]:
        proc = subprocess.run([sys.executable, str(driver), str(n), str(counted), "import",
                               str(chat), "--store", store, "--me", "Ann", "--tz", "UTC"],
                              capture_output=True, env=_env(), timeout=300, check=False)
        return proc.returncode, proc.stderr.decode()

    code, err = run_to(0, str(tmp_path / "whole"))
    assert code == 0, err
    total = int(counted.read_text())
    assert total > 10_000  # the imports, the import, the index wait, the exit
    for at in (0.0005, 0.005, 0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.97, 0.99, 0.997, 0.9995):
        n = max(2, int(total * at))
        code, err = run_to(n, str(tmp_path / f"s{n}"))
        assert code in (0, 130), (n, code, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (n, err)
        if code == 130:
            assert err.strip().splitlines()[-1].startswith("imstore: interrupted"), (n, err)


def test_the_index_commits_in_steps_the_bar_can_show():
    from imstore.cli._importing import _progress_policy

    assert [_progress_policy(n).batch for n in (0, 60_000, 400_000, 5_000_000)] == [
        5_000, 5_000, 20_000, 50_000]


@pytest.mark.slow
def test_the_indexing_bar_counts_documents_as_they_are_indexed(tmp_path: Path, monkeypatch,
                                                               capsys):
    chat = tmp_path / "WhatsApp Chat with Dana.txt"
    chat.write_text("".join(
        f"{1 + d:02}/0{1 + m}/2021, {h:02}:{mi:02} - {'Ann' if mi % 3 else 'Dana'}: m {m} {d} {h} {mi}\n"
        for m in range(3) for d in range(28) for h in range(24) for mi in range(0, 60, 2)),
        encoding="utf-8")
    monkeypatch.setenv("IMSTORE_PROGRESS_EVERY", "0")
    code, _, err = run(["import", str(chat), "--store", str(tmp_path / "s"), "--me", "Ann",
                        "--tz", "UTC"], capsys)
    assert code == 0, err
    counts = [line.split()[1].split("/") for line in err.splitlines()
              if line.startswith("indexing: ")]
    done = {int(d.replace(",", "")) for d, _total in counts}
    total = int(counts[0][1].replace(",", ""))
    assert total > 0 and max(done) == total
    # not 0 % until the very end, nor one jump: commits of a twentieth show as they land
    assert len({d for d in done if 0 < d < total}) >= 2, counts
