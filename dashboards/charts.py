"""Bar charts as inline SVG, rendered on the server: no script, no CDN, readable without
JavaScript, and every figure exact in the bar's tooltip."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 640
HEIGHT = 170
TOP = 16
BOTTOM = 24
LEFT = 8


def bar_chart(points: Sequence[tuple[str, int | float]], *, title: str,
              label: Callable[[int | float], str] = str, label_every: int = 5) -> SafeString:
    """One bar per point (label, value); `label` formats a value for the tooltip and the
    axis. Labels and values are escaped: a chart never carries markup from the data."""
    n = max(len(points), 1)
    peak = max((v for _, v in points), default=0) or 1
    slot = (WIDTH - LEFT) / n
    bar = max(slot * 0.75, 1.0)
    plot = HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<text x="{LEFT}" y="11" class="chart-peak">{escape(label(peak))}</text>',
             f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" '
             'class="chart-axis"/>']
    for i, (name, value) in enumerate(points):
        height = plot * (value / peak) if value > 0 else 0
        x = LEFT + i * slot + (slot - bar) / 2
        y = HEIGHT - BOTTOM - height
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                     f'class="chart-bar"><title>{escape(name)}: {escape(label(value))}</title>'
                     "</rect>")
        if i % label_every == 0 or i == len(points) - 1:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                         f'class="chart-label">{escape(name)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every piece of data in it went through escape()
