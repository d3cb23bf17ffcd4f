"""`imstore demo --matrix URL`: the walkthrough against the live Synapse passes every check."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imstore.cli import main


def test_demo_against_synapse_passes_every_check(synapse: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--matrix", synapse["url"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0 and report["passed"] >= 14, report
    assert any("recall" in c["check"] for c in report["checks"])
