"""`healthlink recognition load | catalogue | qualify | qualifications` against a fresh database."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from healthlink.cli.main import app as cli
from healthlink.recognition import DEFAULT_PATH


def test_a_region_replaces_the_catalogue_and_records_qualifications(fresh_db, tmp_path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    r = runner.invoke(cli, ["recognition", "catalogue"])
    assert r.exit_code == 0, r.output
    assert "* version 1  148 items" in r.output and "by default" in r.output

    raw = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    raw["version"] = "qh-2027"
    raw["items"] = [dict(i, mark="青HR") for i in raw["items"][:120]]
    mine = tmp_path / "qinghai.json"
    mine.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    r = runner.invoke(cli, ["recognition", "load", str(mine)])
    assert r.exit_code == 0, r.output
    assert "catalogue version qh-2027: 120 items (now in force)" in r.output
    assert "already in force" in runner.invoke(cli, ["recognition", "load", str(mine)]).output
    lines = runner.invoke(cli, ["recognition", "catalogue"]).output.splitlines()
    assert lines[0].startswith("* version qh-2027  120 items") and lines[1].startswith("  version 1  148")

    raw["items"][0]["validity_days"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    r = runner.invoke(cli, ["recognition", "load", str(bad)])
    assert r.exit_code == 1
    assert "items[0] (HR-K).validity_days: window must be positive, got 0" in r.output
    assert runner.invoke(cli, ["recognition", "catalogue"]).output.startswith("* version qh-2027")

    r = runner.invoke(cli, ["recognition", "qualify", "--institution", "nowhere", "--from", "2026-01-01"])
    assert r.exit_code == 1 and "unknown institution 'nowhere'" in r.output
    assert runner.invoke(cli, ["recognition", "qualify", "--institution", "x", "--from", "1 Jan"]).exit_code == 2
