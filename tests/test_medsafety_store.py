"""The medication-safety knowledge base in the store (issue 8, item 1): the bundled default stored on
first use, a region's file that replaces it, a vendor's file that extends it, a bad file that
changes nothing and names every error with its file and path, the setting, and the CLI
(`healthlink medsafety load | knowledge`) — each against a fresh database of the suite's kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthlink.cli.main import app as cli
from healthlink.db.migrate import upgrade
from healthlink.medsafety import store
from healthlink.medsafety.knowledge import DEFAULT_PATH, LOCAL_DRUG, KnowledgeError
from healthlink.runtime import Platform
from healthlink.settings import load_settings

BUNDLED = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
VENDOR_SYSTEM = "https://vendor.example.cn/drug-code"


def vendor(**over) -> dict:
    """A vendor's extension in the bundled format: its own product code for warfarin, a new pair
    (with a source of its own), and the ONC row 3 entry with its own management text."""
    onc = next(dict(x) for x in BUNDLED["interactions"] if x.get("onc_row") == 3)
    onc["management"] = "Vendor: monitor INR twice weekly."
    ext = {
        "version": "vendor-2027.1", "date": "2027-01-15",
        "provenance": {"publisher": "Example Vendor", "licence": "licensed to the region",
                       "sources": [{"id": "vendor", "citation": "Example Vendor Drug Knowledge 2027.1",
                                    "licence": "commercial, licensed to the region"}]},
        "products": [{"id": "vendor-warfarin-3mg", "codes": [{"system": VENDOR_SYSTEM, "code": "W-3"}],
                      "name_zh": "华法林钠片 3mg（乙厂）", "kind": "chemical", "ingredients": ["warfarin"],
                      "source": {"ref": "vendor"}}],
        "interactions": [onc, {"id": "vendor-1", "name": "Nifedipine + metformin (vendor)",
                               "a": {"ingredients": ["nifedipine"]}, "b": {"ingredients": ["metformin"]},
                               "severity": "moderate", "mechanism": "Vendor: absorption changed.",
                               "management": "Vendor: monitor glucose.", "source": {"ref": "vendor"}}],
    }
    ext.update(over)
    return ext


def write(path: Path, raw: dict) -> Path:
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def plat(fresh_db):
    p = Platform.start(load_settings())
    upgrade(p.db)
    yield p
    p.close()


def test_the_bundled_knowledge_is_stored_on_first_use(plat) -> None:
    assert store.history(plat.db) == []
    kb = plat.medsafety.knowledge
    assert kb.version == "1"
    (row,) = store.history(plat.db)
    assert (row["version"], row["mode"], row["loaded_by"], row["active"]) == ("1", "default", "default", True)
    assert row["files"][0]["name"] == "knowledge-v1.json (bundled)" and row["counts"] == kb.counts()
    info = plat.medsafety.knowledge_info()
    assert info["stored"]["mode"] == "default" and info["counts"]["onc_high_priority"] >= 15
    assert {s["id"] for s in info["sources"]} >= {"onc-2012", "fda-label", "nhc-review-2018"}


def test_a_vendor_file_extends_the_bundled_base_and_is_in_force_at_once(plat, tmp_path) -> None:
    before = plat.medsafety.knowledge
    assert before.ingredients_of(VENDOR_SYSTEM, "W-3") == ()
    kb, new = store.load(plat.db, [write(tmp_path / "vendor.json", vendor())], extend=True, by="test")
    assert new and kb.version == "1+vendor-2027.1"
    got = plat.medsafety.knowledge  # the process's cache sees the new version in force
    assert got.version == "1+vendor-2027.1"
    assert got.ingredients_of(VENDOR_SYSTEM, "W-3") == ("warfarin",)
    assert got.ingredients_of(LOCAL_DRUG, "LD-0001") == ("amoxicillin",)  # the base is kept
    assert got.counts()["interactions"] == before.counts()["interactions"] + 1  # row 1 replaced, one added
    row1 = next(x for x in got.interactions if x.onc_row == 3)
    assert row1.management == "Vendor: monitor INR twice weekly."
    (ix,) = got.interactions_between("nifedipine", "metformin")[:1]
    assert ix.source.citation == "Example Vendor Drug Knowledge 2027.1"
    rows = store.history(plat.db)
    assert [(r["mode"], r["active"]) for r in rows] == [("extend", True), ("default", False)]
    assert [f["role"] for f in rows[0]["files"]] == ["base", "extension"]
    assert plat.medsafety.knowledge_info()["provenance"]["extensions"][0]["version"] == "vendor-2027.1"
    # the same files again change nothing
    assert store.load(plat.db, [tmp_path / "vendor.json"], extend=True)[1] is False
    assert len(store.history(plat.db)) == 2
    # another process (its own cache) takes the version in force up when it next looks
    other = store.InForce(plat.db, ttl=0)
    assert other().version == "1+vendor-2027.1"
    store.load(plat.db, (), by="test")  # back to the bundled default
    assert other().version == "1" and plat.medsafety.knowledge.version == "1"


def test_a_bad_file_changes_nothing_and_every_error_is_named_with_its_file_and_path(plat, tmp_path) -> None:
    plat.medsafety.knowledge  # noqa: B018 - the default in force
    ext = vendor()
    ext["interactions"][1]["severity"] = "catastrophic"
    ext["interactions"][1]["b"] = {"ingredients": ["unobtainium"]}
    ext["products"][0]["source"] = {"ref": "nowhere"}
    bad = write(tmp_path / "vendor-bad.json", ext)
    with pytest.raises(KnowledgeError) as e:
        store.load(plat.db, [bad], extend=True)
    paths = sorted(i.expression[0] for i in e.value.issues)
    assert paths == ["vendor-bad.json: interactions[1] (vendor-1).b.ingredients",
                     "vendor-bad.json: interactions[1] (vendor-1).severity",
                     "vendor-bad.json: products[0] (vendor-warfarin-3mg).source.ref"], paths
    assert "unknown severity 'catastrophic'" in e.value.message and "vendor-bad.json" in e.value.message
    # not JSON, a section that is not a list, a replacement without provenance
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(KnowledgeError, match="broken.json: cannot read"):
        store.load(plat.db, [tmp_path / "broken.json"], extend=True)
    with pytest.raises(KnowledgeError) as e:
        store.load(plat.db, [write(tmp_path / "x.json", {"interactions": {}})], extend=True)
    assert e.value.issues[0].expression == ("x.json: interactions",)
    whole = dict(BUNDLED, provenance={"publisher": "nobody"})
    with pytest.raises(KnowledgeError) as e:
        store.load(plat.db, [write(tmp_path / "region.json", whole)])
    assert "region.json: provenance.sources" in [i.expression[0] for i in e.value.issues]
    assert [r["mode"] for r in store.history(plat.db)] == ["default"]
    assert plat.medsafety.knowledge.version == "1"


def test_a_region_replaces_the_knowledge_with_its_own_file(plat, tmp_path) -> None:
    raw = json.loads(json.dumps(BUNDLED))
    raw["version"] = "qh-2027"
    raw["interactions"] = [x for x in raw["interactions"] if x["severity"] != "minor"]
    kb, new = store.load(plat.db, [write(tmp_path / "qinghai.json", raw)], by="test")
    assert new and kb.version == "qh-2027"
    assert plat.medsafety.knowledge.counts()["interactions_by_severity"]["minor"] == 0
    assert store.history(plat.db)[0]["mode"] == "replace"


def test_the_setting_names_a_regions_file_and_a_bad_one_stops_the_start(fresh_db, tmp_path, monkeypatch) -> None:
    good = write(tmp_path / "vendor.json", vendor())
    monkeypatch.setenv("HEALTHLINK_MEDSAFETY_KNOWLEDGE", str(good))
    monkeypatch.setenv("HEALTHLINK_MEDSAFETY_KNOWLEDGE_EXTEND", "true")
    p = Platform.start(load_settings())
    try:
        upgrade(p.db)
        assert p.medsafety.knowledge.version == "1+vendor-2027.1"
        assert store.history(p.db)[0]["loaded_by"] == "settings"
    finally:
        p.close()
    ext = vendor()
    ext["interactions"][1]["severity"] = "bad"
    monkeypatch.setenv("HEALTHLINK_MEDSAFETY_KNOWLEDGE", str(write(tmp_path / "bad.json", ext)))
    with pytest.raises(KnowledgeError, match=r"bad.json: interactions\[1\] \(vendor-1\).severity"):
        Platform.start(load_settings())


def test_the_cli_loads_extends_refuses_and_lists_the_knowledge(fresh_db, tmp_path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    r = runner.invoke(cli, ["medsafety", "knowledge"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("version 1 (2026-12-02), default") and "onc_high_priority: 15" in r.output
    assert "[onc-2012] Phansalkar" in r.output and "* version 1  default" in r.output

    ext = write(tmp_path / "vendor.json", vendor())
    r = runner.invoke(cli, ["medsafety", "load", "--extend", str(ext)])
    assert r.exit_code == 0, r.output
    assert "knowledge version 1+vendor-2027.1:" in r.output and "(now in force)" in r.output
    assert "already in force" in runner.invoke(cli, ["medsafety", "load", "--extend", str(ext)]).output
    r = runner.invoke(cli, ["medsafety", "knowledge", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["version"] == "1+vendor-2027.1" and info["stored"]["mode"] == "extend"
    assert [h["mode"] for h in info["history"]] == ["extend", "default"]

    bad = vendor()
    bad["interactions"][1]["severity"] = "catastrophic"
    r = runner.invoke(cli, ["medsafety", "load", "--extend", str(write(tmp_path / "bad.json", bad))])
    assert r.exit_code == 1
    assert "bad.json: interactions[1] (vendor-1).severity: unknown severity 'catastrophic'" in r.output
    assert runner.invoke(cli, ["medsafety", "knowledge"]).output.startswith("version 1+vendor-2027.1")
    assert runner.invoke(cli, ["medsafety", "load", "--extend"]).exit_code == 2  # no file
