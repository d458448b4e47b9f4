"""HTML fragments of the report; every value is escaped with :func:`html.escape`."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template

import pandas as pd

from goup_probe.formatting import format_cell, format_number
from goup_probe.report.folder import FigureFile

TEMPLATE = "index.html"
"""File name of the page template in ``goup_probe/report/templates``."""
_TEXT = ' class="text"'


def esc(value: object) -> str:
    """Text escaped for HTML content and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


def fmt_value(value: object, digits: int = 3) -> str:
    """A cell value as short text: floats to ``digits`` significant digits, NaN as ``–``."""
    return format_number(value, digits, nan="–")


def table(frame: pd.DataFrame, *, digits: int = 3, scroll: bool = False, caption: str = "") -> str:
    """An HTML table of ``frame`` (index dropped); text columns left-aligned.

    Parameters
    ----------
    frame : DataFrame
        Rows to show.
    digits : int
        Significant digits of floats.
    scroll : bool
        Wrap in a scrolling box (for long tables).
    caption : str
        Optional caption (escaped).
    """
    if frame.empty:
        return '<p class="note">(no rows)</p>'
    text_cols = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])}
    head = "".join(f'<th{_TEXT if c in text_cols else ""} scope="col">{esc(c)}</th>' for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f"<td{_TEXT if c in text_cols else ''}>{esc(format_cell(str(c), v, digits, nan='–'))}</td>"
            for c, v in zip(frame.columns, row, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    out = f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{out}</div>' if scroll else out


def figure(fig: FigureFile) -> str:
    """An ``<img>`` of a written PNG with its title and caption."""
    return (
        f'<figure><img src="{esc(fig.relpath)}" alt="{esc(fig.title)}" width="{fig.width}" '
        f'height="{fig.height}"><figcaption><b>{esc(fig.title)}.</b> {esc(fig.caption)} '
        f'<a href="{esc(fig.relpath)}">PNG</a></figcaption></figure>'
    )


def paragraph(text: str, *, cls: str | None = None) -> str:
    """A ``<p>`` of escaped text."""
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def bullet_list(items: Iterable[str], *, cls: str | None = None) -> str:
    """A ``<ul>`` of escaped items."""
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def definition_list(items: Sequence[tuple[str, str]], *, cls: str = "glossary") -> str:
    """A ``<dl>`` of escaped terms and definitions."""
    body = "".join(f"<dt>{esc(term)}</dt><dd>{esc(text)}</dd>" for term, text in items)
    return f'<dl class="{esc(cls)}">{body}</dl>'


def key_value_table(items: Sequence[tuple[str, object]]) -> str:
    """A two-column table of escaped keys and values."""
    rows = "".join(
        f'<tr><th class="text" scope="row">{esc(k)}</th><td class="text">{esc(fmt_value(v, 4))}</td></tr>'
        for k, v in items
    )
    return f"<table>{rows}</table>"


@dataclass(frozen=True)
class Section:
    """One ``<section>`` of the page: id (anchor), heading, and already-escaped HTML body."""

    id: str
    heading: str
    body: str

    def render(self) -> str:
        """The section's HTML."""
        return f'<section id="{esc(self.id)}"><h2>{esc(self.heading)}</h2>\n{self.body}\n</section>'


def page(
    *,
    title: str,
    subtitle: str,
    sections: Sequence[Section],
    version: str,
    built_at: str,
    build_seconds: float,
) -> str:
    """The full HTML document from the packaged template."""
    template = Template(
        resources.files("goup_probe.report").joinpath("templates", TEMPLATE).read_text("utf-8")
    )
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.heading)}</a>' for s in sections)
    return template.substitute(
        title=esc(title),
        subtitle=paragraph(subtitle),
        nav=nav,
        body="\n".join(s.render() for s in sections),
        version=esc(version),
        built_at=esc(built_at),
        build_seconds=esc(f"{build_seconds:.1f}"),
    )
