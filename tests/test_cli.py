"""The imstore command, driven as a person (and a script) would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imstore.cli import build_parser, main

from .test_docs import subcommands


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name: str, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    assert name in capsys.readouterr().out


def test_import_search_export_reimport(data_dir: Path, tmp_path: Path, capsys):
    store = str(tmp_path / "chats")
    tg = str(data_dir / "exports" / "telegram" / "innerdvations_saved.json")
    code, out, _ = run(["import", tg, "--store", store, "--user", "Ben"], capsys)
    assert code == 0 and "imported" in out
    code, out, _ = run(["conversations", "--store", store, "--json"], capsys)
    convs = json.loads(out)
    assert convs[0]["conv_id"] == "tg:saved:9999999999"
    code, out, _ = run(["search", "photo", "--store", store, "--json"], capsys)
    hits = json.loads(out)
    assert hits and all("photo" in json.dumps(h).lower() for h in hits)
    code, out, _ = run(["messages", "tg:saved:9999999999", "--limit", "5", "--store", store], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 5
    export = tmp_path / "all.jsonl"
    code, out, _ = run(["export", "--store", store, "--output", str(export)], capsys)
    n = len(export.read_text().splitlines())
    assert code == 0 and n > 10
    code, out, _ = run(["import", str(export), "--store", str(tmp_path / "copy"), "--user", "Ben",
                        "--json"], capsys)
    assert json.loads(out)[str(export)]["imported"] == n
    code, out, _ = run(["stats", "--store", store, "--json"], capsys)
    assert json.loads(out)["messages"] == n
    code, out, _ = run(["reindex", "--store", store], capsys)
    assert f"{n} messages indexed" in out
    code, out, _ = run(["verify", "--store", store], capsys)
    assert "all consistent" in out


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys):
    code, _, err = run(["conversations", "--store", str(tmp_path / "none")], capsys)
    assert code == 2 and "error 1400" in err
    code, _, err = run(["search", "  ", "--store", str(tmp_path / "s")], capsys)
    assert code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    code, _, err = run(["import", str(bad), "--store", str(tmp_path / "s"), "--user", "me"], capsys)
    assert code == 2 and "bad.json" in err and "Traceback" not in err


def test_demo_runs_as_a_console_script():
    out = subprocess.run([sys.executable, "-m", "imstore.cli", "demo", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "0 failed" in out.stdout
