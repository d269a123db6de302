"""The report's HTML: escaping, tables, images embedded as data URIs, and the page around the sections.

Standard library only. Everything the page shows is inside the one file: images are base64 `data:` URIs, the
style sheet is inline, and there is no script, link, font or other request a browser would make.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a; margin: 0 auto;
       max-width: 1180px; padding: 1.5em 2em 4em; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #d6dbe0; padding-bottom: .2em; margin-top: 2.2em; }
.summary { font-size: 1.15em; background: #eef5ee; border-left: 4px solid #3b873e; padding: .6em 1em; }
.muted, .note { color: #5b6670; } .note { font-size: .92em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #d6dbe0; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.same { color: #9aa4ad; } tr.champion td { background: #fff8e1; }
img.figure { max-width: 100%; height: auto; display: block; margin: .6em 0; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { border: 1px solid #d6dbe0; border-radius: 6px; padding: 6px; width: 340px; }
.card img { width: 164px; height: 164px; image-rendering: auto; object-fit: contain; background: #000; }
.card .caption { font-size: .85em; margin-top: 4px; word-break: break-all; }
nav ol { columns: 2; } code { background: #f3f5f7; padding: 0 .2em; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p class="summary">{summary}</p>
<nav><ol>
{toc}
</ol></nav>
{body}
</body>
</html>
"""


class Html(str):
    """Markup that is already HTML: `text` passes it through instead of escaping it."""


def text(value: object) -> str:
    """`value` as HTML: escaped, unless it is `Html` already."""
    return value if isinstance(value, Html) else html.escape(str(value))


def inline_markdown(line: str) -> Html:
    """The little Markdown the leaderboard's sentences use: **bold** and `code`, the rest escaped."""
    escaped = html.escape(line)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return Html(re.sub(r"`(.+?)`", r"<code>\1</code>", escaped))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image(data: bytes, mime: str, alt: str, cls: str = "figure") -> Html:
    return Html(f'<img class="{cls}" alt="{html.escape(alt)}" src="{data_uri(data, mime)}">')


def image_file(path: Path, alt: str, photo: bool = False) -> Html:
    """A figure file embedded as it is (PNG, JPEG, GIF or SVG); a `photo` (a grid of pictures) as a JPEG, a
    quarter of its PNG's size with nothing a reader would notice."""
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: not an image the report can embed ({', '.join(MIME)})")
    if photo and mime != "image/jpeg":
        from PIL import Image

        out = io.BytesIO()
        with Image.open(path) as picture:
            picture.convert("RGB").save(out, "JPEG", quality=85)
        return image(out.getvalue(), "image/jpeg", alt)
    return image(path.read_bytes(), mime, alt)


def table(header: Sequence[object], rows: Iterable[Sequence[object]], row_classes: Sequence[str] = ()) -> Html:
    """An HTML table; a cell is text, `Html`, or a `Cell` carrying its own class (numbers align right)."""
    head = "".join(f"<th>{text(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(cell_html(c) for c in row) + "</tr>")
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>")


@dataclass(frozen=True)
class Cell:
    value: object
    cls: str = "num"


def cell_html(cell: object) -> str:
    if isinstance(cell, Cell) and cell.cls:
        return f'<td class="{cell.cls}">{text(cell.value)}</td>'
    if isinstance(cell, Cell):
        return f"<td>{text(cell.value)}</td>"
    return f"<td>{text(cell)}</td>"


def paragraph(value: object, cls: str = "") -> Html:
    attribute = f' class="{cls}"' if cls else ""
    return Html(f"<p{attribute}>{text(value)}</p>")


def card(images: Sequence[Html], caption: Sequence[object]) -> Html:
    """Images side by side with a caption under them (one line per item)."""
    lines = "<br>".join(text(c) for c in caption)
    return Html(f'<div class="card">{"".join(images)}<div class="caption">{lines}</div></div>')


def cards(items: Sequence[Html]) -> Html:
    return Html('<div class="cards">' + "".join(items) + "</div>")


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    parts: Sequence[object]


def page(title: str, summary: object, sections: Sequence[Section]) -> str:
    """The whole document: title, one-line summary, contents, then each section in order."""
    toc = "\n".join(f'<li><a href="#{s.anchor}">{text(s.title)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}">\n<h2>{text(s.title)}</h2>\n' + "\n".join(text(p) for p in s.parts) + "\n</section>"
        for s in sections
    )
    return PAGE.format(title=text(title), style=STYLE, summary=text(summary), toc=toc, body=body)
