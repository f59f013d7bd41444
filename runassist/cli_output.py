"""The command line's output: consoles that never parse user text as markup, JSON, and tables that are
drawn on a terminal and tab-separated in a pipe. Shared by cli.py and cli_lifecycle.py."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# User text (paths, tokens, tags, labels, config values) reaches these consoles: every message
# escapes it (rich.markup.escape) and emoji codes stay text (":smile:" is a tag, not a face).
out = Console(soft_wrap=True, emoji=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, emoji=False, highlight=False)


def _json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _show(title: str | None, columns: list[str] | None, rows: list[list], *, right: int = 0) -> None:
    """A table: drawn by rich on a terminal; written as tab-separated lines (``# title`` first, then
    the header) into a pipe or a file, where a drawn table would be cut to 80 columns and is no use
    to ``cut`` or ``awk``. Cells are user text: escaped for rich, tabs and newlines flattened for TSV.
    ``right``: how many columns from the second on are numbers (right-aligned on a terminal)."""
    cells = [[c if isinstance(c, str) else _fmt(c) for c in row] for row in rows]
    if not out.is_terminal:
        lines = [f"# {title}"] if title else []
        if columns:
            lines.append("\t".join(columns))
        lines += ["\t".join(" ".join(c.split()) for c in row) for row in cells]
        sys.stdout.write("".join(line + "\n" for line in lines))
        return
    table = Table(title=escape(title) if title else None, show_header=columns is not None)
    for i, name in enumerate(columns or [""] * (len(cells[0]) if cells else 0)):
        table.add_column(escape(name), justify="right" if 0 < i <= right else "left")
    for row in cells:
        table.add_row(*(escape(c) for c in row))
    out.print(table)
