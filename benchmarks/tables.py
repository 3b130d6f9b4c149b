"""Markdown table helpers shared by the reports."""

from __future__ import annotations

import math


def fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def check(value: float, limit: float, spec: str = ".2f") -> str:
    """``value`` with ✓ when it is within ``limit``, ✗ when not."""
    if math.isnan(value):
        return "n/a"
    return f"{value:{spec}} {'✓' if value <= limit else '✗'}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
