"""A tiny document model rendered twice: Markdown and one self-contained HTML file (images
embedded as data URLs, no network fetch). Every text that reaches either output is escaped,
so model output cannot inject markup."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;
padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f2f2f2}img{max-width:100%;margin:.5em 0}
.flag{color:#a40000}.muted{color:#666;font-size:.85em}code{background:#f4f4f4;padding:0 .2em}"""


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str, css: str | None = None) -> None:
        self.blocks.append(("p", text, css))

    def bullets(self, items: list[str], css: str | None = None) -> None:
        self.blocks.append(("ul", items, css))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", headers, rows))

    def image(self, path: Path | None, alt: str) -> None:
        if path is not None:
            self.blocks.append(("img", path, alt))


def _md_cell(value) -> str:
    text = "" if value is None else str(value)
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    out = [f"# {_md_cell(doc.title)}", ""]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h2":
            out += [f"## {_md_cell(block[1])}", ""]
        elif kind == "p":
            out += [_md_cell(block[1]), ""]
        elif kind == "ul":
            out += [f"- {_md_cell(item)}" for item in block[1]] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "---|" * len(headers))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{_md_cell(block[2])}]({block[1].name})", ""]
    return "\n".join(out)


def to_html(doc: Document) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(doc.title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(doc.title)}</h1>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h2":
            out.append(f"<h2>{e(block[1])}</h2>")
        elif kind == "p":
            cls = f' class="{block[2]}"' if block[2] else ""
            out.append(f"<p{cls}>{e(block[1])}</p>")
        elif kind == "ul":
            cls = f' class="{block[2]}"' if block[2] else ""
            out.append(f"<ul{cls}>" + "".join(f"<li>{e(str(i))}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e('' if c is None else str(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            out.append(f'<img alt="{e(block[2])}" src="data:image/png;base64,{data}">')
    out.append("</body></html>")
    return "\n".join(out)


def write(doc: Document, out_dir: Path, stem: str) -> tuple[Path, Path]:
    md, page = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    md.write_text(to_markdown(doc))
    page.write_text(to_html(doc))
    return md, page
