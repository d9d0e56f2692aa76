"""The aggregates as a page a planner would rather look at than read: server-rendered HTML, one SVG bar chart per
dimension (population/chart.py) with the same numbers in an accessible table beside it, no script at all."""

from __future__ import annotations

from html import escape
from typing import Any

from services.record_api.population.aggregates import DIMENSIONS, MEASURE_NAMES, MEASURES
from services.record_api.population.chart import bar_chart

PAGE_DIMENSIONS = ("age_band", "sex", "ethnic_category", "deprivation_decile", "postcode_district")
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")
_STYLE = """
body{font-family:Arial,Helvetica,sans-serif;color:#212b32;margin:0 auto;max-width:1100px;padding:1rem 1.5rem;
line-height:1.5}
h1{font-size:2rem;margin-bottom:.25rem} h2{margin-top:2rem;border-top:1px solid #d8dde0;padding-top:1rem}
.lead{font-size:1.1rem} nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5rem 1.5rem}
a{color:#005eb8} a:focus{background:#ffeb3b;color:#212b32;outline:3px solid #212b32}
a[aria-current]{font-weight:bold;color:#212b32}
.pair{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start} .pair svg{max-width:100%;height:auto}
table{border-collapse:collapse;min-width:16rem} caption{text-align:left;font-weight:bold;padding-bottom:.25rem}
th,td{border-bottom:1px solid #d8dde0;padding:.25rem .75rem;text-align:left} td.n{text-align:right}
.suppressed{font-style:italic} .totals td{font-weight:bold}
"""


def render(sections: list[dict[str, Any]], *, measure: str, purpose: str, threshold: int, generated: str) -> str:
    """The page for one measure: a totals line, then a chart and table per dimension."""
    first = sections[0]["measures"] if sections else {}
    body = [
        "<h1>Population health: who uses services</h1>",
        f'<p class="lead">{escape(MEASURE_NAMES[measure])} by group, for {escape(_purpose(purpose))}. '
        "People who registered the National Data Opt-out or objected to sharing are not counted. Counts from 1 "
        f"to {threshold - 1} are suppressed, and so are the cells that would let a suppressed one be worked out.</p>",
        _totals(first),
        _measure_nav(measure),
    ]
    body += [_section(section, measure) for section in sections]
    body.append(f"<footer><p>Generated {escape(generated)}. Sources: the shared care record; deprivation from the "
                "Index of Multiple Deprivation by LSOA.</p></footer>")
    return ("<!doctype html>\n<html lang=\"en-GB\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(MEASURE_NAMES[measure])} by group - population health</title>"
            f"<style>{_STYLE}</style></head><body><main>{''.join(body)}</main></body></html>")


def _purpose(purpose: str) -> str:
    return "research" if purpose == "HRESCH" else "planning and operations"


def _count(value: int | None) -> str:
    return '<span class="suppressed">suppressed</span>' if value is None else f"{value:,}"


def _totals(measures: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th scope=\"row\">{escape(MEASURE_NAMES[m])}</th>"
                   f"<td class=\"n\">{_count(measures[m]['total'])}</td></tr>" for m in MEASURES if m in measures)
    return f'<table class="totals" id="totals"><caption>Totals</caption><tbody>{rows}</tbody></table>'


def _measure_nav(current: str) -> str:
    current_mark = ' aria-current="page"'
    links = "".join(
        f'<li><a href="?measure={m}"{current_mark if m == current else ""}>{escape(MEASURE_NAMES[m])}</a></li>'
        for m in MEASURES)
    return f'<nav aria-label="What to count"><ul>{links}</ul></nav>'


def _section(section: dict[str, Any], measure: str) -> str:
    dimension = section["dimensions"][0]
    title = f"{MEASURE_NAMES[measure]} by {DIMENSIONS[dimension].split(' (')[0].lower()}"
    labels = {v["code"]: v["label"] for v in section["values"][dimension]}
    rows = [(labels[cell[dimension]], cell["count"]) for cell in section["measures"][measure]["cells"]]
    chart = bar_chart(title, rows)
    table_rows = "".join(f"<tr><th scope=\"row\">{escape(name)}</th><td class=\"n\">{_count(value)}</td></tr>"
                         for name, value in rows)
    table = (f'<table id="table-{dimension}"><caption>{escape(title)}</caption><thead><tr>'
             f'<th scope="col">{escape(DIMENSIONS[dimension])}</th><th scope="col">Count</th></tr></thead>'
             f"<tbody>{table_rows}</tbody></table>")
    return (f'<section id="by-{dimension}" aria-labelledby="h-{dimension}"><h2 id="h-{dimension}">{escape(title)}'
            f'</h2><div class="pair"><figure>{chart}</figure>{table}</div></section>')
