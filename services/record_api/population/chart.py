"""Server-side SVG bar charts for the aggregates page: no script, readable by screen readers (title, desc,
text labels on every bar), suppressed cells drawn as such rather than as zero."""

from __future__ import annotations

from xml.sax.saxutils import escape

BAR_HEIGHT, GAP, LABEL_WIDTH, CHART_WIDTH, VALUE_WIDTH = 22, 6, 190, 420, 90
BAR_COLOUR, SUPPRESSED_COLOUR, TEXT_COLOUR = "#005eb8", "#768692", "#212b32"  # NHS blue, mid grey, text black


def bar_chart(title: str, rows: list[tuple[str, int | None]], *, description: str = "") -> str:
    """A horizontal bar chart; `None` values are suppressed small numbers and are labelled so."""
    largest = max((v for _, v in rows if v is not None), default=0) or 1
    height = len(rows) * (BAR_HEIGHT + GAP) + 40
    width = LABEL_WIDTH + CHART_WIDTH + VALUE_WIDTH
    slug = "".join(c if c.isalnum() else "-" for c in title.lower())[:40]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-labelledby="t-{slug} d-{slug}">',
        f'<title id="t-{slug}">{escape(title)}</title>',
        f'<desc id="d-{slug}">{escape(description or _describe(rows))}</desc>',
        f'<text x="0" y="18" font-size="16" font-weight="bold" fill="{TEXT_COLOUR}">{escape(title)}</text>',
    ]
    for index, (label, value) in enumerate(rows):
        y = 32 + index * (BAR_HEIGHT + GAP)
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + 16}" font-size="13" text-anchor="end" '
                     f'fill="{TEXT_COLOUR}">{escape(label)}</text>')
        if value is None:
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="24" height="{BAR_HEIGHT}" fill="none" '
                         f'stroke="{SUPPRESSED_COLOUR}" stroke-dasharray="3 2"/>')
            parts.append(f'<text x="{LABEL_WIDTH + 32}" y="{y + 16}" font-size="13" fill="{TEXT_COLOUR}">'
                         "suppressed (small number)</text>")
            continue
        bar = round(CHART_WIDTH * value / largest)
        parts.append(f'<rect class="bar" x="{LABEL_WIDTH}" y="{y}" width="{max(bar, 1)}" height="{BAR_HEIGHT}" '
                     f'fill="{BAR_COLOUR}"><title>{escape(label)}: {value:,}</title></rect>')
        parts.append(f'<text x="{LABEL_WIDTH + bar + 6}" y="{y + 16}" font-size="13" fill="{TEXT_COLOUR}">'
                     f"{value:,}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _describe(rows: list[tuple[str, int | None]]) -> str:
    return "; ".join(f"{label}: {'suppressed' if value is None else f'{value:,}'}" for label, value in rows)
