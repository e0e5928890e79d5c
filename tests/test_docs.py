"""Docs that are generated from code must not drift from it."""

from pathlib import Path

from healthlink.settings import render_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_doc_lists_every_setting_as_the_code_declares_it():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert render_markdown() in doc, "docs/configuration.md is stale: paste healthlink.settings.render_markdown()"


def test_readme_has_exactly_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Set up", 1)[1].split("##", 1)[0]
    commands = [ln for ln in block.splitlines() if ln.startswith("    ") or ln.startswith("make ")]
    assert [c.strip() for c in commands] == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
