"""Pieces of the HTML report that the report and the tasks' report sections share.

Every function returns HTML; text that came from data or a user is escaped here (``e``), so a
label such as ``<script>`` or ``[/]`` is shown, never run or parsed. Callers pass HTML they built
with these functions, or text through ``e``.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

from runassist import plots


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "–" if value is None else e(value)


def img(images: dict[str, bytes], name: str, alt: str) -> str:
    data = images.get(name)
    if not data:
        return ""
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{e(alt)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>plots/{e(name)}</figcaption></figure>")


def missing(text: str) -> str:
    return f'<p class="missing">{e(text)}</p>'


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """Cells are HTML already (callers escape); header names are escaped here."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def bar(value: float, colour: str = plots.ACCENT) -> str:
    width = max(0.0, min(1.0, float(value))) * 100
    return f'<span class="bar"><span style="width:{width:.1f}%;background:{colour}"></span></span>'


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """One colour per label, the same in every chart and table of a report."""
    return {t: plots.colour_for(i) for i, t in enumerate(sorted(labels))}
