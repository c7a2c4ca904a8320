"""Building blocks of a self-contained HTML report: one file, inline CSS and SVG, no scripts.

The page must open offline from an e-mail attachment or a shared drive, so nothing here links to
anything outside the file: styles are inline, plots are inline SVG (see :mod:`reports.plots`) and
the font stack names only fonts the reader's system already has.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

Tone = Literal["good", "bad", "neutral"]

STYLE = """
:root { --ink:#1d2433; --muted:#5b6475; --line:#d9dee7; --good:#1b7f4b; --bad:#b3261e;
        --accent:#2f5fb3; --bg:#ffffff; --soft:#f4f6fa; --warn-bg:#fff4e5; --warn:#8a4b00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; }
header.report { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 10px; }
header.report h1 { margin: 0 0 4px; font-size: 26px; }
header.report p { margin: 0; color: var(--muted); }
nav.toc { margin: 10px 0 0; font-size: 14px; }
nav.toc a { color: var(--accent); margin-right: 14px; text-decoration: none; }
section { margin: 28px 0 0; page-break-inside: auto; }
section > h2 { font-size: 20px; margin: 0 0 6px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.lead { margin: 4px 0 12px; color: var(--muted); }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 14px; }
.kpi { background: var(--soft); border-radius: 8px; padding: 14px 16px; }
.kpi .label { color: var(--muted); font-size: 13px; text-transform: uppercase; letter-spacing: .03em; }
.kpi .value { font-size: 32px; font-weight: 650; margin: 2px 0; }
.kpi .change { font-size: 14px; }
.kpi .explain { font-size: 12.5px; color: var(--muted); margin-top: 6px; }
.good { color: var(--good); } .bad { color: var(--bad); } .neutral { color: var(--muted); }
table.data { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 6px 0 10px; }
table.data th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 2px solid var(--line);
                padding: 5px 8px; }
table.data td { border-bottom: 1px solid var(--line); padding: 4px 8px; }
table.data td.num, table.data th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data tr.best td { background: #e7f5ed; }
table.data tr.worst td { background: #fdecea; }
table.data tr.warn td { background: var(--warn-bg); }
figure { margin: 8px 0 14px; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: var(--muted); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
@media (max-width: 820px) { .grid2 { grid-template-columns: 1fr; } }
.note { background: var(--soft); border-left: 4px solid var(--accent); padding: 8px 12px; font-size: 13.5px;
        margin: 8px 0; }
.warning { background: var(--warn-bg); border-left: 4px solid var(--warn); color: var(--warn);
           padding: 8px 12px; font-size: 13.5px; margin: 8px 0; }
.tag { display: inline-block; font-size: 11.5px; padding: 1px 7px; border-radius: 10px; background: var(--soft);
       color: var(--muted); margin-left: 6px; vertical-align: middle; }
p.csv { margin: 2px 0 12px; font-size: 12.5px; } p.csv a { color: var(--accent); }
.ci { color: var(--muted); font-size: 12px; white-space: nowrap; }
.rule { font-size: 12.5px; color: var(--muted); margin: 2px 0 10px; }
ul.drivers { padding-left: 20px; } ul.drivers li { margin: 3px 0; }
footer { margin-top: 36px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line);
         padding-top: 8px; }
@media print { main { padding: 0; } section { break-inside: auto; } figure, .kpi, table.data tr
               { break-inside: avoid; } nav.toc { display: none; } }
"""


def esc(value: object) -> str:
    """HTML-escape any value (numbers and None included)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def fmt_number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def fmt_count(value: float | None) -> str:
    return "n/a" if value is None else f"{round(value):,}"


def fmt_hours(hours: float | None) -> str:
    """Hours as a manager reads them: minutes below an hour, days above two days."""
    if hours is None:
        return "n/a"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


@dataclass(frozen=True)
class Kpi:
    """A headline number with its change against the previous period.

    ``higher_is_better`` decides the colour of the change; ``key`` and ``raw`` are written into
    data attributes so a test (or a scraper) can read the exact value behind the formatted one.
    """

    key: str
    label: str
    raw: float | None
    text: str
    previous_raw: float | None
    change_text: str
    higher_is_better: bool
    explain: str
    # False when a test finds the change within chance: then it is not coloured.
    significant: bool | None = None

    @property
    def tone(self) -> Tone:
        if self.raw is None or self.previous_raw is None or self.raw == self.previous_raw:
            return "neutral"
        if self.significant is False:
            return "neutral"
        improved = (self.raw > self.previous_raw) == self.higher_is_better
        return "good" if improved else "bad"

    def render(self) -> str:
        raw = "" if self.raw is None else repr(float(self.raw))
        previous = "" if self.previous_raw is None else repr(float(self.previous_raw))
        return (
            f'<div class="kpi" data-kpi="{esc(self.key)}" data-value="{raw}" '
            f'data-previous="{previous}">'
            f'<div class="label">{esc(self.label)}</div>'
            f'<div class="value">{esc(self.text)}</div>'
            f'<div class="change {self.tone}">{esc(self.change_text)}</div>'
            f'<div class="explain">{esc(self.explain)}</div></div>'
        )


@dataclass(frozen=True)
class ColumnFormat:
    """How one frame column shows in a table: heading, formatter, numeric alignment.

    ``cell`` (optional) renders the cell from the whole row (a dict), for a value whose look
    depends on another column (a change coloured only when a test marks it).
    """

    name: str
    heading: str
    formatter: Callable[[object], str] = esc
    numeric: bool = False
    cell: Callable[[dict], str] | None = None

    def render(self, row: dict) -> str:
        return self.cell(row) if self.cell is not None else self.formatter(row[self.name])


@dataclass
class Exports:
    """Every table of the page as a CSV file in ``folder`` beside the HTML, linked from the page.

    A CSV holds exactly the rows and columns of its table (headings as column names) with the
    unrounded values, so a manager can take it to a spreadsheet.
    """

    folder: str
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)

    def href(self, ident: str) -> str:
        return f"{self.folder}/{ident}.csv"

    def add(self, ident: str, frame: pl.DataFrame, what: str = "this table") -> str:
        if ident in self.frames:
            raise ValueError(f"two exported tables share the id {ident!r}")
        self.frames[ident] = frame
        return (
            f'<p class="csv"><a href="{esc(self.href(ident))}" data-csv="{esc(ident)}" download>'
            f"Download {esc(what)} as CSV</a></p>"
        )

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for ident, frame in self.frames.items():
            path = directory / f"{ident}.csv"
            csv_ready(frame).write_csv(path)
            written.append(path)
        return written


def csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns a CSV can hold: dates as ISO text, lists joined by '; '."""
    return frame.with_columns(
        [
            pl.col(name).cast(pl.List(pl.String)).list.join("; ")
            for name, dtype in frame.schema.items()
            if isinstance(dtype, pl.List)
        ]
    )


def export_frame(frame: pl.DataFrame, columns: Sequence[ColumnFormat]) -> pl.DataFrame:
    """The table's columns of ``frame`` under their headings, values unformatted."""
    return frame.select([pl.col(c.name).alias(c.heading) for c in columns])


def table(
    frame: pl.DataFrame,
    columns: Sequence[ColumnFormat],
    row_class: Sequence[str] | None = None,
    table_id: str | None = None,
    *,
    exports: Exports | None = None,
    row_attributes: Sequence[str] | None = None,
) -> str:
    """An HTML table of ``frame``; ``row_class`` gives each row a CSS class (best, worst, warn).

    With ``exports`` (and a ``table_id``) the same rows and columns are exported as CSV and the
    table is followed by its download link. ``row_attributes`` are extra attributes per row.
    """
    head = "".join(
        f'<th class="num">{esc(c.heading)}</th>' if c.numeric else f"<th>{esc(c.heading)}</th>"
        for c in columns
    )
    classes = list(row_class) if row_class is not None else [""] * frame.height
    body = []
    for row_index, row in enumerate(frame.iter_rows(named=True)):
        cells = "".join(
            f'<td class="num">{c.render(row)}</td>' if c.numeric else f"<td>{c.render(row)}</td>"
            for c in columns
        )
        css = f' class="{esc(classes[row_index])}"' if classes[row_index] else ""
        extra = f" {row_attributes[row_index]}" if row_attributes is not None else ""
        body.append(f"<tr{css}{extra}>{cells}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    rendered = (
        f'<table class="data"{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    if exports is not None and table_id:
        rendered += exports.add(table_id, export_frame(frame, columns))
    return rendered


def figure(
    svg: str,
    caption: str,
    *,
    exports: Exports | None = None,
    data_id: str | None = None,
    data: pl.DataFrame | None = None,
) -> str:
    """A chart with its caption; with ``exports`` its data goes to CSV, linked under the caption."""
    link = ""
    attribute = ""
    if exports is not None and data_id and data is not None:
        link = exports.add(data_id, data, "the data behind this chart")
        attribute = f' data-chart="{esc(data_id)}"'
    return f"<figure{attribute}>{svg}<figcaption>{esc(caption)}</figcaption>{link}</figure>"


def note(text: str) -> str:
    return f'<div class="note">{esc(text)}</div>'


def warning(text: str) -> str:
    return f'<div class="warning" role="alert">{esc(text)}</div>'


def paragraph(text: str, css: str = "") -> str:
    cls = f' class="{esc(css)}"' if css else ""
    return f"<p{cls}>{esc(text)}</p>"


def bullet_list(items: Iterable[str], css: str = "") -> str:
    """A list of already-rendered HTML fragments."""
    cls = f' class="{esc(css)}"' if css else ""
    return f"<ul{cls}>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


@dataclass
class Section:
    ident: str
    title: str
    lead: str
    parts: list[str] = field(default_factory=list)

    def add(self, *fragments: str) -> Section:
        self.parts.extend(fragments)
        return self

    def render(self) -> str:
        return (
            f'<section id="{esc(self.ident)}"><h2>{esc(self.title)}</h2>'
            f'<p class="lead">{esc(self.lead)}</p>{"".join(self.parts)}</section>'
        )


def document(
    title: str,
    subtitle: str,
    sections: Sequence[Section],
    footer: str,
    header_html: str = "",
) -> str:
    """The whole page. A strict Content-Security-Policy makes the no-external-resources promise
    enforceable: a browser refuses any script, font or remote image that slips in."""
    toc = "".join(f'<a href="#{esc(s.ident)}">{esc(s.title)}</a>' for s in sections)
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>"
        f'<header class="report"><h1>{esc(title)}</h1><p>{esc(subtitle)}</p>{header_html}'
        f'<nav class="toc">{toc}</nav></header>'
        + "".join(s.render() for s in sections)
        + f"<footer>{esc(footer)}</footer></main></body></html>\n"
    )
