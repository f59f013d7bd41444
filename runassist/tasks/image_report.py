"""The image part of the HTML report: the confusion matrix and a grid of the misclassified test
images the model was surest of, as embedded thumbnails (the report stays one file) with their true
and predicted labels."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from runassist.data.images import is_idx, read_idx_array
from runassist.htmlparts import e, img
from runassist.tasks.classify_report import mistakes_or_note

THUMB = 96  # pixels on the longer side


def errors_section(scores: dict[str, Any] | None, predictions: Path | None, images: dict[str, bytes], *,
                   shown: int) -> str:
    parts = []
    if images.get("confusion.png"):
        parts.append(f'<div class="narrow">{img(images, "confusion.png", "test confusion matrix")}</div>')
    parts.append("<h3>Misclassified images</h3>")
    found = mistakes_or_note(parts, predictions, "test images")
    if found is None:
        return "".join(parts)
    n, wrong = found
    arrays: dict[str, np.ndarray] = {}
    cells = []
    for row in wrong[:shown]:
        thumb = _thumbnail(str(row.get("source") or ""), arrays)
        picture = (f'<img alt="{e(row.get("file", ""))}" style="width:{THUMB}px;image-rendering:pixelated" '
                   f'src="data:image/png;base64,{thumb}">' if thumb
                   else '<span class="missing">(image not found)</span>')
        gold = ", ".join(row.get("gold") or []) or "(none)"
        predicted = ", ".join(row.get("labels") or []) or "(none)"
        cells.append(f'<figure class="thumb" style="width:{THUMB + 40}px;margin:0">{picture}<figcaption>true: {e(gold)}<br>'
                     f'<span class="bad">predicted: {e(predicted)}</span> ({row["confidence"]:.2f})<br>'
                     f'<span class="small" style="word-break:break-all">{e(Path(str(row.get("file", ""))).name)}</span></figcaption></figure>')
    parts.append(f'<p class="small">{len(wrong)} of {n} test images are wrong; the {len(cells)} the model was '
                 "surest of:</p>")
    parts.append('<div class="grid" style="display:flex;flex-wrap:wrap;gap:8px">' + "".join(cells) + "</div>")
    return "".join(parts)


def _thumbnail(source: str, arrays: dict[str, np.ndarray]) -> str | None:
    """A PNG thumbnail in base64 of a file, or of ``file.gz#index`` in an IDX file; None if it is gone."""
    from PIL import Image

    try:
        path, _, index = source.rpartition("#")
        if path and index.isdigit() and is_idx(Path(path)):
            if path not in arrays:
                arrays[path] = read_idx_array(Path(path))
            image = Image.fromarray(arrays[path][int(index)])
        else:
            image = Image.open(source)
            image.load()
        image.thumbnail((THUMB, THUMB))
        if image.size[0] < THUMB // 2:  # 28 x 28 digits: scale up, blocky rather than blurred
            factor = THUMB // max(image.size)
            image = image.resize((image.size[0] * factor, image.size[1] * factor), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 -- a moved or broken file costs its thumbnail, not the report
        return None
