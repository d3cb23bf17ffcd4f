"""The docs stay true: every code example runs, every CLI command and public name is documented."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import imstore
from imstore.cli import build_parser

from .conftest import REPO

DOCS = REPO / "docs"
DOC_FILES = sorted([*DOCS.glob("*.md"), REPO / "README.md"])


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("path", [p for p in DOC_FILES if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_example_runs(path: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for i, block in enumerate(python_blocks(path)):
        if block.lstrip().startswith("class My") and "..." in block:
            compile(block, f"{path.name}[{i}]", "exec")  # a protocol outline: it must parse
            continue
        block = block.replace('"/tmp/imstore-alice"', repr(str(tmp_path / "alice")))
        exec(compile(block, f"{path.name}[{i}]", "exec"), namespace)


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_cli_command_is_documented():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in subcommands():
        assert f"## `imstore {name}" in text, f"imstore {name} is missing from docs/cli.md"


def test_every_public_name_is_in_the_api_reference():
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    for name in [*imstore.__all__, "open"]:
        assert f"`{name}" in text or f"{name}(" in text, f"{name} is missing from docs/api.md"


def test_the_readme_starts_with_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    assert "imstore demo" in blocks[0] and "pytest" in blocks[1]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for line in ("pip install . && imstore demo", "pip install '.[test]' && python -m pytest"):
        assert line in blocks[0] + blocks[1] and line in ci
    synapse = next(b for b in blocks if "scripts/synapse.py" in b)
    for line in ("python scripts/synapse.py install && python scripts/synapse.py start",
                 "pip install '.[matrix]' && imstore demo --matrix \"$(python scripts/synapse.py url)\"",
                 "python scripts/synapse.py stop"):
        assert line in synapse and line in ci, line


def test_the_readme_says_where_the_test_data_comes_from_and_the_fast_lane():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "IMSTORE_DATA" in readme and "SOURCES.tsv" in readme and "../shared/data" in readme
    assert 'python -m pytest -m "not slow"' in readme
    conftest = (REPO / "tests" / "conftest.py").read_text(encoding="utf-8")
    assert '"IMSTORE_DATA"' in conftest and '"shared" / "data"' in conftest
    setup = (REPO / "setup.cfg").read_text(encoding="utf-8")
    assert "slow:" in setup  # the marker the fast lane leaves out is registered


def test_benchmarks_page_has_the_command():
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert "python -m benchmarks" in text
    assert os.path.exists(REPO / "benchmarks" / "__main__.py")


# ------------------------------------------------------------- docs/api.md against the code

_API = (DOCS / "api.md").read_text(encoding="utf-8") if (DOCS / "api.md").exists() else ""
# A name the reference lists: a capitalised identifier opening a code span or following "->",
# "[" or "| " inside one -- `TextBody`, `Conversation(...)`, `-> TimelinePage`,
# `CursorResult[GroupReadAck]` -- not one after a dot (`typing.Protocol`, `MemoryServer.join`).
_NAME = re.compile(r"(?:`|-> |\[|\| )([A-Z][a-z]\w*)\b")
_NOT_NAMES = {"Ctrl", "None", "True", "False"}


def api_names() -> list[str]:
    found: set[str] = set()
    for span in re.findall(r"`([^`]+)`", _API):
        for name in _NAME.findall("`" + span):
            found.add(name)
    return sorted(found - _NOT_NAMES)


def test_the_api_reference_lists_what_imstore_exports():
    names = api_names()
    assert {"MessageStore", "TextBody", "TimelinePage", "Gap", "MergeResult"} <= set(names)
    import builtins
    import enum
    import typing

    python = {n for m in (builtins, enum, typing) for n in dir(m)}  # `StrEnum`, `Protocol`
    missing = [n for n in names if not hasattr(imstore, n) and n not in python]
    assert not missing, f"docs/api.md lists names `from imstore import` cannot find: {missing}"


# A documented signature with its return type: `name(args) -> Type` (a method of the section's
# class), or `Class.name(args) -> Type`.
_SIGNATURE = re.compile(r"`(?:await )?(?:([A-Z]\w*)\.)?([a-z_]\w*)\([^`]*\) -> ([^`]+)`")


def documented_returns() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    section = ""
    for line in _API.splitlines():
        heading = re.match(r"#+ `(?:imstore\.)?(\w+)", line)
        if heading:
            section = heading.group(1)
            continue
        for owner, name, ret in _SIGNATURE.findall(line):
            out.append((owner or section, name, ret.strip()))
    return out


def _normalised(annotation: str) -> str:
    text = annotation.replace("\\|", "|").replace(" ", "")
    return re.sub(r"\b(?:Awaitable|Coroutine)\[(.*)\]$", r"\1", text)


@pytest.mark.parametrize(("owner", "name", "ret"), documented_returns(),
                         ids=lambda v: str(v)[:40])
def test_a_documented_return_type_is_the_signature_s(owner: str, name: str, ret: str):
    import inspect

    target = imstore if owner == "open" else getattr(imstore, owner)
    fn = getattr(target, name)
    annotation = inspect.signature(fn).return_annotation
    assert annotation is not inspect.Signature.empty, f"{owner}.{name} has no return annotation"
    shown = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    assert _normalised(shown) == _normalised(ret), f"{owner}.{name}: docs say {ret}, code {shown}"


def test_the_return_type_check_covers_the_store_and_the_client():
    owners = {o for o, _n, _r in documented_returns()}
    assert {"MessageStore", "ChatClient"} <= owners and len(documented_returns()) >= 30
