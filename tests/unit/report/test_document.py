"""The document model escapes every text it renders (model output cannot inject markup)."""

from harness.report.document import Document, to_html, to_markdown

EVIL = "<script>alert('x')</script> | <b>bold</b>\nnext"


def test_every_block_is_escaped_in_html_and_markdown():
    doc = Document(EVIL)
    doc.heading(EVIL)
    doc.para(EVIL)
    doc.bullets([EVIL])
    doc.table([EVIL], [[EVIL]])
    page, md = to_html(doc), to_markdown(doc)
    assert "<script>" not in page and "<b>" not in page
    assert page.count("&lt;script&gt;") == 7  # title h1 h2 p li th td
    assert "<script>" not in md and "\\|" in md and "\nnext" not in md  # a newline inside a cell or line is flattened
