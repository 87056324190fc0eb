"""One renderer for the project's reports: a :class:`Document` (a title, an intro and sections of
paragraphs, bullet lists, tables and figures) written as Markdown (figures as files beside it) and as
one self-contained HTML page (figures embedded as base64 PNG). The eval report
(:mod:`pipeline.report`) and the comparison report (:mod:`pipeline.compare.report`) build a document
and render it here, so both formats of both reports agree in layout and escaping.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin-bottom:.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
         "text-align:left;font-size:90%}th{background:#f0f0f0}img{max-width:100%}"
         ".note{color:#555;font-size:85%}")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    note: str = ""  # a line under the table


@dataclass
class Figure:
    """A PNG: ``path`` is where the Markdown links it (relative to the report), ``png`` its bytes."""

    alt: str
    path: str
    png: bytes


@dataclass
class Bullets:
    items: list[str]


Block = str | Table | Figure | Bullets  # a str is a paragraph


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    intro: list[Block] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    page_title: str | None = None  # the HTML <title> (default: the title)


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, str):
        return [block, ""]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items] + [""]
    if isinstance(block, Figure):
        return [f"![{block.alt}]({block.path})", ""]
    lines = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in block.rows]
    return lines + ([""] + [block.note, ""] if block.note else [""])


def markdown(document: Document) -> str:
    """The document as Markdown: ``#`` title, ``##`` sections, pipe tables, linked figures."""
    lines = [f"# {document.title}", ""]
    for block in document.intro:
        lines += _markdown_block(block)
    for section in document.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _markdown_block(block)
    return "\n".join(lines).rstrip("\n") + "\n"


def _html_block(block: Block) -> list[str]:
    e = html.escape
    if isinstance(block, str):
        return [f"<p>{e(block)}</p>"]
    if isinstance(block, Bullets):
        return ["<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>"]
    if isinstance(block, Figure):
        encoded = base64.b64encode(block.png).decode("ascii")
        return [f"<img alt='{e(block.alt)}' src='data:image/png;base64,{encoded}'>"]
    parts = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in block.header) + "</tr>"]
    parts += ["<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in block.rows]
    parts.append("</table>")
    return parts + ([f"<p class='note'>{e(block.note)}</p>"] if block.note else [])


def html_page(document: Document) -> str:
    """The document as one self-contained HTML page."""
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>{e(document.page_title or document.title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{e(document.title)}</h1>"]
    for block in document.intro:
        parts += _html_block(block)
    for section in document.sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        for block in section.blocks:
            parts += _html_block(block)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
