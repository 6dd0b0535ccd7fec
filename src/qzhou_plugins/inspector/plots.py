"""The evaluation's plots as SVG, drawn here in Python: no plotting library, no network, no script.

Each function returns one self-contained ``<svg>`` (its size, fonts and colours inline), so the page
shows it as it is and saves it as an ``.svg`` file (or, drawn on a canvas, as a PNG) unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

COLOURS = ("#3867d6", "#f7b731")
"""nDCG@10 and recall@100 (the bars); readable on white and in grey."""

HELPED, HURT, SAME = "#20bf6b", "#eb3b5a", "#778ca3"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'

LABEL_MOST = 60
"""Characters of a run's name written under its bars; a longer name is cut (whole in its tooltip)."""
_NARROW, _WIDE = set(" .,:;'!|()[]ijlftrI1"), set("MWmw@%")
"""Characters that take much less, or much more, than most at the 12 px of :data:`FONT`."""
SLANT = 35
"""Degrees the run names are turned by, so that long ones do not run into each other."""


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" {FONT}><title>{escape(title)}</title>'
        f'<rect width="{width}" height="{height}" fill="white"/>' + "".join(body) + "</svg>"
    )


def _axis(x: float, right: float, top: float, bottom: float, ticks: int = 5) -> list[str]:
    """A vertical 0..1 axis at ``x`` with light grid lines to ``right``."""
    parts = []
    for step in range(ticks + 1):
        value = step / ticks
        y = bottom - (bottom - top) * value
        parts.append(f'<line x1="{x}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{x - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.1f}</text>')
    return parts


def bars(runs: Sequence[tuple[str, float, float]], title: str = "nDCG@10 and recall@100 per run") -> str:
    """Two bars per run, ``(label, ndcg_at_10, recall_at_100)``, on one 0..1 scale.

    Each run's name is written slanted under its bars, whole up to :data:`LABEL_MOST` characters (a
    longer one is cut, and whole in its tooltip), and the picture is made as large as its longest
    name needs: no name is clipped at the left or bottom edge.
    """
    group, bar, top, plot = 110, 36, 60, 210
    extents = [_slanted_extent(_short(label, LABEL_MOST)) for label, *_ in runs]
    # Each name ends under its bars and reaches left by its extent: none may start before the edge.
    left = max(
        [50] + [math.ceil(across) - (15 + bar + 10) - group * n + 8 for n, (across, _) in enumerate(extents)]
    )
    bottom = top + plot
    width = max(380, left + 20 + group * max(1, len(runs)))
    height = bottom + 16 + math.ceil(max((down for _, down in extents), default=0)) + 16
    body = [f'<text x="{left}" y="22" font-size="15" font-weight="600">{escape(title)}</text>']
    body += _axis(left, width - 10, top, bottom)
    for number, (label, ndcg, recall) in enumerate(runs):
        x = left + 15 + group * number
        for offset, (value, colour, name) in enumerate(
            ((ndcg, COLOURS[0], "nDCG@10"), (recall, COLOURS[1], "recall@100"))
        ):
            h = (bottom - top) * max(0.0, min(1.0, value))
            bx = x + offset * (bar + 4)
            body.append(f'<rect x="{bx}" y="{bottom - h:.1f}" width="{bar}" height="{h:.1f}" fill="{colour}">'
                        f"<title>{escape(label)}: {name} {value:.4f}</title></rect>")  # fmt: skip
            body.append(f'<text x="{bx + bar / 2}" y="{bottom - h - 4:.1f}" text-anchor="middle" '
                        f'font-size="10">{value:.3f}</text>')  # fmt: skip
        turn = f"rotate(-{SLANT} {x + bar + 10} {bottom + 16})"
        name = f"<title>{escape(label)}</title>{escape(_short(label, LABEL_MOST))}"
        body.append(f'<text class="run-name" x="{x + bar + 10}" y="{bottom + 16}" text-anchor="end" '
                    f'transform="{turn}">{name}</text>')  # fmt: skip
    legend_y = 44
    for offset, (colour, name) in enumerate(zip(COLOURS, ("nDCG@10", "recall@100"), strict=True)):
        lx = left + offset * 120
        body.append(f'<rect x="{lx}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>')
        body.append(f'<text x="{lx + 18}" y="{legend_y}">{name}</text>')
    return _svg(width, height, title, body)


def scatter(
    points: Sequence[tuple[str, str, float, float]], x_label: str, y_label: str, metric: str = "nDCG@10"
) -> str:
    """One dot per query, ``(query id, query text, x, y)``: above the diagonal, the second run did better."""
    size, left, top = 380, 60, 62
    width, height = left + size + 30, top + size + 60
    bottom = top + size
    helped = sum(1 for *_, x, y in points if y > x + 1e-9)
    hurt = sum(1 for *_, x, y in points if y < x - 1e-9)
    counts = f"{helped} helped, {hurt} hurt, {len(points) - helped - hurt} unchanged (of {len(points)})"
    title = f"{metric} per query: {counts}"
    body = [f'<text x="{left}" y="22" font-size="15" font-weight="600">{metric} per query</text>',
            f'<text x="{left}" y="42"><tspan fill="{HELPED}">{helped} helped</tspan>, '
            f'<tspan fill="{HURT}">{hurt} hurt</tspan>, {len(points) - helped - hurt} unchanged '
            f"(of {len(points)} queries)</text>"]  # fmt: skip
    body += _axis(left, left + size, top, bottom)
    body.append(f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#999"/>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{left + size}" y2="{top}" stroke="#999" '
                'stroke-dasharray="4 4"/>')  # fmt: skip
    for query_id, text, x, y in points:
        colour = HELPED if y > x + 1e-9 else HURT if y < x - 1e-9 else SAME
        cx, cy = left + size * _unit(x), bottom - size * _unit(y)
        tip = escape(f"{query_id}: {text} ({x:.3f} -> {y:.3f})")
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}" fill-opacity="0.7" '
                    f"data-query={quoteattr(query_id)}><title>{tip}</title></circle>")  # fmt: skip
    body.append(f'<text x="{left + size / 2}" y="{bottom + 36}" text-anchor="middle">'
                f"{escape(_short(x_label, 60))} ({metric})</text>")  # fmt: skip
    turn = f"rotate(-90 16 {top + size / 2})"
    body.append(f'<text x="16" y="{top + size / 2}" text-anchor="middle" transform="{turn}">'
                f"{escape(_short(y_label, 60))} ({metric})</text>")  # fmt: skip
    return _svg(width, height, title, body)


def _slanted_extent(label: str) -> tuple[float, float]:
    """How far ``label``, slanted by :data:`SLANT` and ending at a point, reaches left of it and below
    it (its line's height included)."""
    length = _text_width(label)
    angle = math.radians(SLANT)
    return length * math.cos(angle) + 12 * math.sin(angle), length * math.sin(angle) + 12 * math.cos(angle)


def _text_width(text: str) -> float:
    """An upper estimate of ``text``'s width in pixels at the 12 px of :data:`FONT` (whichever sans-serif
    face the viewer has): the room it is given."""
    return sum(4.5 if c in _NARROW else 11.5 if c in _WIDE else 9.0 if c.isupper() else 7.2 for c in text)


def _unit(value: float) -> float:
    return max(0.0, min(1.0, value))


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"
