"""A small document model (headings, paragraphs, tables, images, code) rendered as Markdown or as HTML.

The report is built once as blocks and written in either format, so both say the same thing.
HTML escapes every text; Markdown escapes the characters that would break a table cell.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

FORMATS = ("md", "html")


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""
    """One letter per column, "l" (text) or "r" (numbers); default: the first column "l", the others "r"."""

    @property
    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)


@dataclass(frozen=True)
class Image:
    file: str
    """A file beside the document."""
    alt: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Table | Image | Code


def render(blocks: Sequence[Block], fmt: str, title: str) -> str:
    """The document as ``md`` or ``html`` (a complete page titled ``title``)."""
    if fmt == "md":
        return "\n\n".join(_markdown(block) for block in blocks) + "\n"
    if fmt == "html":
        body = "\n".join(_html(block) for block in blocks)
        return (
            f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
        )
    raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")


_STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
    ".text{text-align:left}img{max-width:100%}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}"
)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Table):
        lines = ["| " + " | ".join(map(_cell, block.header)) + " |",
                 "|" + "|".join("---:" if a == "r" else "---" for a in block.alignment) + "|"]
        lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Image):
        return f"![{block.alt}]({block.file})"
    fence = "````" if "```" in block.text else "```"
    return f"{fence}\n{block.text}\n{fence}"


def _html(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        styles = [" class=\"text\"" if a == "l" else "" for a in block.alignment]
        head = "".join(f"<th{style}>{html.escape(cell)}</th>" for style, cell in zip(styles, block.header))
        rows = "".join(
            "<tr>" + "".join(f"<td{style}>{html.escape(cell)}</td>" for style, cell in zip(styles, row)) + "</tr>"
            for row in block.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Image):
        return f"<p><img src=\"{html.escape(block.file)}\" alt=\"{html.escape(block.alt)}\"></p>"
    return f"<pre>{html.escape(block.text)}</pre>"
