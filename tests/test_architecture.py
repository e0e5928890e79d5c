"""The dependency direction written in docs/architecture.md is enforced, not only reviewed."""

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_down_and_core_knows_no_http(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def test_architecture_doc_names_every_package():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    pkgs = sorted(p.name for p in (ROOT / "src" / "healthlink").iterdir()
                  if p.is_dir() and (p / "__init__.py").exists())
    missing = [p for p in pkgs if f"`{p}/`" not in doc]
    assert not missing, f"docs/architecture.md does not describe: {missing}"
