"""PNG charts for the run report: learning curves, per-label F1, confusion matrix.

Each function draws one figure and returns its PNG bytes (or None when there is nothing
to draw); the report writes them to RUN/plots/ and embeds them in the HTML. Figures are
drawn with matplotlib's Agg canvas directly (no pyplot), so no GUI backend is ever
touched and no global matplotlib state changes under other code in the same process.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from runassist.atomic import atomic_write

# tab10: distinct, colour-blind-tolerant, and the report uses the same colours for entity types.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
ACCENT = PALETTE[0]
DPI = 110


def plain(text: Any, limit: int = 32) -> str:
    """A label as matplotlib should print it: '$' would start mathtext (and can fail to parse)."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def colour_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # Agg, explicitly: attaches the canvas that renders the PNG
    ax = fig.add_subplot(1, 1, 1)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=9)
    return fig, ax


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_png(path: Path, data: bytes) -> None:
    atomic_write(path, data)


def _ema(values: Sequence[float], alpha: float) -> list[float]:
    out, last = [], None
    for v in values:
        last = v if last is None else alpha * v + (1 - alpha) * last
        out.append(last)
    return out


def line_chart(xs: Sequence[float], ys: Sequence[float], *, title: str, ylabel: str, xlabel: str = "step",
               smooth: bool = False, log_y: bool = False) -> bytes | None:
    """One series against step; with ``smooth`` and many points, an EMA drawn over the raw line."""
    if not xs:
        return None
    fig, ax = _figure(4.4, 3.0)
    many = smooth and len(ys) >= 30
    ax.plot(xs, ys, color=ACCENT, linewidth=1.0 if many else 1.6, alpha=0.35 if many else 1.0,
            marker="o" if len(xs) <= 25 else None, markersize=3)
    if many:
        ax.plot(xs, _ema(ys, 0.1), color=ACCENT, linewidth=1.8, label="smoothed")
        ax.legend(fontsize=7.5, frameon=False)
    if log_y and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    return _png(fig)


def dev_chart(rows: Sequence[dict[str, Any]], metric: str, *, best_step: int | None,
              extra: Sequence[str] = ()) -> bytes | None:
    """The dev headline metric against step (bold), other dev scores thin, the kept step starred."""
    points = [(r["step"], r[metric]) for r in rows if isinstance(r.get(metric), (int, float))]
    if not points:
        return None
    fig, ax = _figure(4.4, 3.0)
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=ACCENT, linewidth=2.0, marker="o", markersize=3.5, label=plain(metric), zorder=3)
    for i, name in enumerate(n for n in extra if n != metric):
        other = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
        if other:
            ox, oy = zip(*other)
            ax.plot(ox, oy, color=colour_for(i + 1), linewidth=1.0, alpha=0.7, label=plain(name))
    best = [(x, y) for x, y in points if x == best_step]
    if best:
        ax.plot([best[-1][0]], [best[-1][1]], marker="*", markersize=13, color="#d62728", linestyle="none",
                label=f"kept (step {best_step})", zorder=4)
    values = [v for r in rows for k, v in r.items() if k in (metric, *extra) and isinstance(v, (int, float))]
    if values and 0.0 <= min(values) and max(values) <= 1.0:
        ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"dev {plain(metric)}", fontsize=11)
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel(plain(metric), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, framealpha=0.85, loc="best")
    return _png(fig)


def per_label_chart(per_label: dict[str, dict[str, Any]], *, colours: dict[str, str] | None = None,
                    title: str = "test F1 per label") -> bytes | None:
    """Horizontal F1 bars, one per label, with the gold support beside each bar."""
    if not per_label:
        return None
    labels = list(per_label)
    f1 = [float(per_label[k].get("f1", 0.0)) for k in labels]
    support = [per_label[k].get("support") for k in labels]
    n = len(labels)
    fig, ax = _figure(4.4, min(0.34 * n + 1.2, 24.0))
    ys = list(range(n))[::-1]
    bar_colours = [(colours or {}).get(k, ACCENT) for k in labels]
    ax.barh(ys, f1, color=bar_colours, height=0.65)
    for y, value, sup in zip(ys, f1, support):
        note = f"{value:.3f}" + (f"  (n={sup})" if sup is not None else "")
        ax.text(min(value, 1.0) + 0.015, y, note, va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([plain(k) for k in labels], fontsize=9 if n <= 30 else 6)
    ax.set_xlim(0, 1.32)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("F1", fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def confusion_chart(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes | None:
    """Rows gold, columns predicted; colour is the share of the gold row, the number is the count."""
    import numpy as np

    if not labels or not matrix:
        return None
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(labels)
    side = min(max(3.2, 0.45 * n + 1.6), 16.0)
    fig, ax = _figure(side + 0.8, side)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("share of gold row", fontsize=7)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7 if n > 10 else 8,
                            color="white" if share[i, j] > 0.55 else "#222222")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    size = 8 if n <= 12 else 6
    names = [plain(k) for k in labels]
    ax.set_xticklabels(names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=size)
    ax.set_yticklabels(names, fontsize=size)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("gold", fontsize=8)
    ax.set_title("test confusion matrix", fontsize=10)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _png(fig)


def history_chart(points: Sequence[tuple[int, float, str]], *, metric: str, maximize: bool) -> bytes | None:
    """A study's optimisation history: each finished trial's objective by trial number (complete: filled,
    pruned: hollow) and the best value so far as a step line."""
    done = [(n, v, s) for n, v, s in points if isinstance(v, (int, float))]
    if not done:
        return None
    fig, ax = _figure(5.2, 3.2)
    for state, style in (("COMPLETE", {"color": ACCENT}), ("PRUNED", {"facecolors": "none", "edgecolors": "#7f7f7f"})):
        chosen = [(n, v) for n, v, s in done if s == state]
        if chosen:
            xs, ys = zip(*chosen)
            ax.scatter(xs, ys, s=22, label=state.lower(), zorder=3, **style)
    complete = sorted((n, v) for n, v, s in done if s == "COMPLETE")
    if complete:
        best, xs, ys = None, [], []
        for n, v in complete:
            best = v if best is None else (max(best, v) if maximize else min(best, v))
            xs.append(n)
            ys.append(best)
        ax.step(xs, ys, where="post", color="#d62728", linewidth=1.6, label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"optimisation history: dev {plain(metric)}", fontsize=11)
    ax.set_xlabel("trial", fontsize=9)
    ax.set_ylabel(plain(metric), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, frameon=False)
    return _png(fig)


def importance_chart(importances: dict[str, float]) -> bytes | None:
    """Horizontal bars: each searched parameter's importance for the objective (normalised to sum to 1)."""
    if not importances:
        return None
    names = list(importances)[::-1]
    fig, ax = _figure(5.2, 0.5 + 0.35 * len(names))
    ax.barh([plain(n, 40) for n in names], [importances[n] for n in names], color=ACCENT)
    ax.set_xlim(0, 1)
    ax.set_title("parameter importance", fontsize=11)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)
