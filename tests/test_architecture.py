"""The dependency direction written in docs/architecture.md is enforced, not only reviewed."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_down_and_core_knows_no_http():
    # in a subprocess: import-linter reconfigures logging for the whole interpreter
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config",
                        str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_architecture_doc_names_every_package():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    pkgs = sorted(p.name for p in (ROOT / "src" / "healthlink").iterdir()
                  if p.is_dir() and (p / "__init__.py").exists())
    missing = [p for p in pkgs if f"`{p}/`" not in doc]
    assert not missing, f"docs/architecture.md does not describe: {missing}"
