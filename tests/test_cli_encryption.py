"""The command line on encrypted stores (issue 22): keys from a file or the environment (never an
argument), ``imstore encrypt``, ``imstore rekey`` and ``imstore info``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import imstore
from imstore import Message
from imstore.cli import main

from .test_importers import write_whatsapp

pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")

RAW = bytes(range(32))
SECRET = "correct horse battery staple"
BOB = Message.text("bob", "").conv_id


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMSTORE_KEY", "IMSTORE_KEY_FILE", "IMSTORE_NEW_KEY", "IMSTORE_NEW_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _store(path: Path, key: bytes | str | None, n: int = 3) -> None:
    with imstore.open(path, user_id="alice", key=key) as s:
        for i in range(n):
            s.insert_message(Message.text("bob", f"hello {i}"))


def _key_file(tmp_path: Path, content: bytes, name: str = "store.key") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _stats(store: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run(["--store", str(store), "--json", *extra, "stats"], capsys)


# ------------------------------------------------------------------------------ the key

@pytest.mark.parametrize("content,key", [(RAW, RAW), (SECRET.encode() + b"\n", SECRET),
                                         (b"   " + SECRET.encode() + b"\r\n", SECRET),
                                         (b"0123456789abcdefghijklmnopqrstu\n",
                                          "0123456789abcdefghijklmnopqrstu")],
                         ids=["32 raw bytes", "passphrase and newline", "passphrase, CRLF",
                              "31 characters and echo's newline: 32 bytes of text"])
def test_a_key_file_opens_the_store(tmp_path: Path, capsys, content: bytes, key) -> None:
    _store(tmp_path / "s", key)
    code, out, err = _stats(tmp_path / "s", capsys, "--key-file", _key_file(tmp_path, content))
    assert (code, err) == (0, "")
    assert json.loads(out)["messages"] == 3


def test_the_key_file_option_goes_after_the_subcommand_too(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "s", RAW)
    code, out, _ = run(["--store", str(tmp_path / "s"), "--json", "stats", "--key-file",
                        _key_file(tmp_path, RAW)], capsys)
    assert code == 0 and json.loads(out)["owner"] == "alice"


def test_the_key_from_the_environment(tmp_path: Path, capsys,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _store(tmp_path / "s", SECRET)
    monkeypatch.setenv("IMSTORE_KEY_FILE", _key_file(tmp_path, SECRET.encode()))
    assert _stats(tmp_path / "s", capsys)[0] == 0
    monkeypatch.delenv("IMSTORE_KEY_FILE")
    monkeypatch.setenv("IMSTORE_KEY", SECRET + "\n")
    assert _stats(tmp_path / "s", capsys)[0] == 0


def test_the_key_file_option_wins_over_the_environment(tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _store(tmp_path / "s", RAW)
    monkeypatch.setenv("IMSTORE_KEY", "not the key")
    assert _stats(tmp_path / "s", capsys, "--key-file", _key_file(tmp_path, RAW))[0] == 0


def test_the_key_from_standard_input(tmp_path: Path, capsys,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _store(tmp_path / "s", SECRET)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(SECRET.encode() + b"\n")))
    assert _stats(tmp_path / "s", capsys, "--key-file", "-")[0] == 0


@pytest.mark.parametrize("option", [["--key", SECRET], [f"--key={SECRET}"], ["--key"]])
def test_a_key_on_the_command_line_is_refused_and_never_shown(tmp_path: Path, capsys,
                                                              option: list[str]) -> None:
    _store(tmp_path / "s", SECRET)
    code, out, err = _stats(tmp_path / "s", capsys, *option)
    assert code == 2 and out == ""
    assert "never given on the command line" in err and "--key-file" in err
    assert SECRET not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content,why", [(b"", "holds no key"), (b"\n  \n", "holds no key"),
                                         (b"\xff\xfe\x00binary", "holds no key"),
                                         (b"x" * 5000, "not a key file")])
def test_a_key_file_that_holds_no_key_is_refused(tmp_path: Path, capsys, content: bytes,
                                                 why: str) -> None:
    _store(tmp_path / "s", RAW)
    code, out, err = _stats(tmp_path / "s", capsys, "--key-file", _key_file(tmp_path, content))
    assert code == 2 and out == "" and why in err and "Traceback" not in err


def test_a_missing_key_file_is_one_line(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "s", RAW)
    code, _, err = _stats(tmp_path / "s", capsys, "--key-file", str(tmp_path / "nope"))
    assert code == 2 and "cannot read the key file" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", [["stats"], ["conversations"], ["search", "hello"],
                                     ["messages", BOB], ["verify"], ["export"]])
def test_every_command_on_an_encrypted_store_without_its_key_says_how_to_give_it(
        tmp_path: Path, capsys, command: list[str]) -> None:
    _store(tmp_path / "s", RAW)
    code, out, err = run(["--store", str(tmp_path / "s"), *command], capsys)
    assert code == 2 and out == ""
    assert "is encrypted: give its key with --key-file FILE" in err


def test_a_wrong_key_is_refused(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "s", RAW)
    code, _, err = _stats(tmp_path / "s", capsys, "--key-file",
                          _key_file(tmp_path, bytes(range(1, 33))))
    assert code == 2 and "does not open the encrypted store" in err


def test_a_key_for_a_plain_store_is_refused(tmp_path: Path, capsys,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _store(tmp_path / "s", None)
    monkeypatch.setenv("IMSTORE_KEY", "stale")
    code, _, err = _stats(tmp_path / "s", capsys)
    assert code == 2 and "is not encrypted, but a key was given ($IMSTORE_KEY)" in err
    assert "imstore encrypt" in err


def test_import_with_a_key_creates_an_encrypted_store(tmp_path: Path, capsys) -> None:
    export = write_whatsapp(tmp_path)
    key = _key_file(tmp_path, RAW)
    code, _, err = run(["--store", str(tmp_path / "s"), "--key-file", key, "import",
                        str(export), "--user", "ann", "--me", "Ann"], capsys)
    assert code == 0, err
    assert imstore.is_encrypted(tmp_path / "s")
    code, out, _ = run(["--store", str(tmp_path / "s"), "--key-file", key, "--json", "search",
                        "hey"], capsys)
    assert code == 0 and len(out.splitlines()) == 2
    assert not [p for p in (tmp_path / "s").rglob("*.db*") if b"Dana" in p.read_bytes()]


# ------------------------------------------------------------------------ the commands

def test_encrypt_then_every_command_needs_the_key(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "s", None)
    key = _key_file(tmp_path, SECRET.encode() + b"\n")
    code, out, err = run(["--store", str(tmp_path / "s"), "--key-file", key, "encrypt"], capsys)
    assert code == 0 and "encrypted the store" in out, err
    assert imstore.is_encrypted(tmp_path / "s")
    with imstore.open(tmp_path / "s", user_id="alice", key=SECRET) as s:
        assert s.message_count(BOB) == 3
    assert _stats(tmp_path / "s", capsys, "--key-file", key)[0] == 0
    code, _, err = run(["--store", str(tmp_path / "s"), "--key-file", key, "encrypt"], capsys)
    assert code == 2 and "encrypted already" in err and "imstore rekey" in err


def test_encrypt_needs_a_key_and_a_store(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "s", None)
    code, _, err = run(["--store", str(tmp_path / "s"), "encrypt"], capsys)
    assert code == 2 and "needs the key to encrypt with" in err
    assert not imstore.is_encrypted(tmp_path / "s")
    code, _, err = run(["--store", str(tmp_path / "none"), "--key-file",
                        _key_file(tmp_path, RAW), "encrypt"], capsys)
    assert code == 2 and "holds no store" in err


def test_encrypt_refuses_a_store_open_in_this_process(tmp_path: Path, capsys) -> None:
    with imstore.open(tmp_path / "s", user_id="alice") as s:
        code, _, err = run(["--store", str(tmp_path / "s"), "--key-file",
                            _key_file(tmp_path, RAW), "encrypt"], capsys)
        assert code == 2 and "is open" in err
        assert s.conversations() == []
    assert not imstore.is_encrypted(tmp_path / "s")


def test_rekey_moves_the_store_to_the_new_key(tmp_path: Path, capsys,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _store(tmp_path / "s", RAW)
    old = _key_file(tmp_path, RAW, "old.key")
    monkeypatch.setenv("IMSTORE_NEW_KEY", "the new passphrase")
    code, out, err = run(["--store", str(tmp_path / "s"), "--key-file", old, "rekey"], capsys)
    assert code == 0 and "new key" in out, err
    assert _stats(tmp_path / "s", capsys, "--key-file", old)[0] == 2
    monkeypatch.setenv("IMSTORE_KEY", "the new passphrase")
    assert _stats(tmp_path / "s", capsys)[0] == 0
    monkeypatch.delenv("IMSTORE_KEY")
    monkeypatch.delenv("IMSTORE_NEW_KEY")
    new = _key_file(tmp_path, bytes(range(1, 33)), "new.key")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"the new passphrase")))
    code, _, err = run(["--store", str(tmp_path / "s"), "--key-file", "-", "rekey",
                        "--new-key-file", new], capsys)
    assert code == 0, err
    assert _stats(tmp_path / "s", capsys, "--key-file", new)[0] == 0


def test_rekey_with_a_wrong_key_changes_nothing(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "s", RAW)
    before = (tmp_path / "s" / "imstore.db").read_bytes()
    code, _, err = run(["--store", str(tmp_path / "s"), "--key-file",
                        _key_file(tmp_path, b"wrong\n"), "rekey", "--new-key-file",
                        _key_file(tmp_path, b"new\n", "new.key")], capsys)
    assert code == 2 and "does not open" in err
    assert (tmp_path / "s" / "imstore.db").read_bytes() == before


@pytest.mark.parametrize("args,why", [
    ([], "needs the store's key"),
    (["--key-file", "OLD"], "needs the new key"),
    (["--key-file", "-", "--new-key-file", "-"], "cannot both come from standard input"),
    (["--key-file", "OLD", "--new-key", "x"], "never given on the command line"),
])
def test_rekey_says_what_is_missing(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch,
                                   args: list[str], why: str) -> None:
    _store(tmp_path / "s", RAW)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(RAW)))
    old = _key_file(tmp_path, RAW)
    code, _, err = run(["--store", str(tmp_path / "s"), "rekey",
                        *[old if a == "OLD" else a for a in args]], capsys)
    assert code == 2 and why in err
    with imstore.open(tmp_path / "s", user_id="alice", key=RAW) as s:
        assert s.message_count(BOB) == 3


def test_rekey_refuses_a_plain_store(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "s", None)
    code, _, err = run(["--store", str(tmp_path / "s"), "--key-file", _key_file(tmp_path, RAW),
                        "rekey", "--new-key-file", _key_file(tmp_path, b"n\n", "n")], capsys)
    assert code == 2 and "not encrypted" in err and "imstore encrypt" in err


def test_info_says_whether_the_store_is_encrypted(tmp_path: Path, capsys) -> None:
    _store(tmp_path / "plain", None)
    _store(tmp_path / "enc", RAW)
    code, out, _ = run(["--store", str(tmp_path / "plain"), "--json", "info"], capsys)
    assert code == 0
    assert json.loads(out) | {"database_bytes": 0} == {
        "store": str(tmp_path / "plain"), "encrypted": False, "owner": "alice",
        "database_bytes": 0}
    code, out, _ = run(["--store", str(tmp_path / "enc"), "--json", "info"], capsys)
    assert code == 0 and json.loads(out)["encrypted"] is True and json.loads(out)["owner"] is None
    code, out, _ = run(["--store", str(tmp_path / "enc"), "--key-file", _key_file(tmp_path, RAW),
                        "info"], capsys)
    assert code == 0 and "yes (SQLCipher)" in out and "alice" in out
    code, _, err = run(["--store", str(tmp_path / "none"), "info"], capsys)
    assert code == 2 and "holds no store" in err


_HOLDS_THE_WRITE_LOCK = """
import sys, sqlcipher3
con = sqlcipher3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA key = \\"x'" + bytes(range(32)).hex() + "'\\"")
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_locked_encrypted_store_is_said_to_be_locked_after_the_short_wait(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    _store(tmp_path / "s", RAW)
    monkeypatch.setenv("IMSTORE_LOCK_TIMEOUT", "0.2")
    with subprocess.Popen([sys.executable, "-c", _HOLDS_THE_WRITE_LOCK,
                           str(tmp_path / "s" / "imstore.db")], text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            code, _, err = _stats(tmp_path / "s", capsys, "--key-file", _key_file(tmp_path, RAW))
            proc.communicate("", timeout=60)
        finally:
            if proc.returncode is None:  # exactly the child this test started
                proc.kill()
                proc.wait()
    assert code == 2 and "is locked by another process" in err


def test_a_key_file_saved_with_a_byte_order_mark_holds_the_passphrase(tmp_path: Path,
                                                                      capsys) -> None:
    _store(tmp_path / "s", SECRET)
    key = _key_file(tmp_path, "\ufeff".encode() + SECRET.encode() + b"\r\n")  # Notepad
    assert _stats(tmp_path / "s", capsys, "--key-file", key)[0] == 0
