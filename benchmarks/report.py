"""Render benchmark JSON files as one Markdown table (for docs/benchmarks.md).

    python -m benchmarks.report bench-100k.json bench-1m.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def render(paths: list[str]) -> str:
    runs: list[dict[str, Any]] = [json.loads(Path(p).read_text()) for p in paths]
    head = "| figure | unit |"
    rule = "|---|---|"
    for r in runs:
        n = f"{r['meta']['messages']:,}"
        head += f" imstore @{n} | reference @{n} | ratio @{n} |"
        rule += "---:|---:|---:|"
    head += " goal |"
    rule += "---|"
    lines = [head, rule]
    names = [f["name"] for f in runs[0]["figures"]]
    for name in names:
        row = None
        cells = ""
        for r in runs:
            f = next((f for f in r["figures"] if f["name"] == name), None)
            if f is None:
                cells += " | | |"
                continue
            row = f
            mark = {True: " ✓", False: " ✗", None: ""}[f["met"]]
            ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}×"
            cells += f" {_fmt(f['imstore'])}{mark} | {_fmt(f['reference'])} | {ratio} |"
        assert row is not None
        lines.append(f"| {name.strip()} | {row['unit']} |{cells} {row['goal']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(sys.argv[1:]))
