"""The shared report renderer: one document, Markdown and HTML that say the same thing."""

from __future__ import annotations

from pipeline.document import Bullets, Document, Figure, Section, Table, html_page, markdown


def test_markdown_and_html_render_the_same_document():
    doc = Document("Report <1>", ["intro a|b"], [
        Section("Numbers", [Table(["metric", "value"], [["a|b", "0.5"], ["<c>", "1"]], note="a note")]),
        Section("Plot", [Figure("the plot", "figures/p.png", b"\x89PNG")]),
        Section("Notes", [Bullets(["first", "second & more"])]),
    ], page_title="tab")
    text = markdown(doc)
    assert text.startswith("# Report <1>\n\nintro a|b\n\n## Numbers\n\n| metric | value |\n|---|---|\n")
    assert "| a\\|b | 0.5 |" in text and "\na note\n" in text  # a pipe in a cell cannot split it
    assert "![the plot](figures/p.png)" in text and "- second & more" in text and text.endswith("more\n")
    page = html_page(doc)
    assert "<title>tab</title>" in page and "<h1>Report &lt;1&gt;</h1>" in page
    assert "<td>a|b</td><td>0.5</td>" in page and "<td>&lt;c&gt;</td>" in page
    assert "<p class='note'>a note</p>" in page and "src='data:image/png;base64,iVBORw=='" in page
    assert "<li>second &amp; more</li>" in page
