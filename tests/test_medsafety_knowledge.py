"""The medication-safety knowledge base (issue 8, item 1): the bundled file, its lookups, its
validation and how a region extends it."""

import copy
import json

import pytest

from healthlink.demogen.catalog import ACUTE, ALLERGENS, CHRONIC
from healthlink.medsafety.knowledge import (
    DEFAULT_PATH,
    LOCAL_DRUG,
    RXNORM,
    SEVERITIES,
    KnowledgeError,
    load,
    merge,
    parse,
)

# Phansalkar et al. 2012, Table 2 (revised): row -> (class A, class B)
ONC_15 = {
    3: "Amphetamine derivatives + MAOIs",
    4: "Atazanavir + proton pump inhibitors",
    6: "Febuxostat + thiopurines",
    8: "SSRIs / SNRIs + MAOIs",
    11: "Irinotecan + CYP3A4 inhibitors",
    16: "Narcotic analgesics (serotonergic) + MAOIs",
    20: "Tricyclic antidepressants + MAOIs",
    21: "QT-prolonging agents + QT-prolonging agents",
    22: "Ramelteon + CYP1A2 inhibitors",
    23: "Protease inhibitors + strong CYP3A4 inducers",
    25: "Simvastatin or lovastatin + CYP3A4 inhibitors",
    27: "Ergot alkaloids + CYP3A4 inhibitors",
    28: "Tizanidine + CYP1A2 inhibitors",
    30: "Tranylcypromine + procarbazine",
    31: "Triptans + MAOIs",
}


@pytest.fixture(scope="module")
def kb():
    return load()


@pytest.fixture
def raw():
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _entry(raw, section, entry_id):
    return next(e for e in raw[section] if e["id"] == entry_id)


def _refused(raw) -> str:
    with pytest.raises(KnowledgeError) as exc:
        parse(raw)
    return str(exc.value)


# -- the bundled file ---------------------------------------------------------------------
def test_bundled_file_loads_with_version_date_and_provenance(kb):
    assert kb.version == "1" and kb.date == "2026-12-02"
    ids = {s["id"] for s in kb.provenance["sources"]}
    assert {"onc-2012", "onc-2013", "fda-label", "rxnorm", "bl-sidechain"} <= ids
    assert all(s.get("licence") for s in kb.provenance["sources"])
    text = json.dumps(kb.provenance, ensure_ascii=False)
    assert "DDInter" in text and "ATC" in text  # said not to be used


def test_every_entry_carries_a_source_with_a_known_basis(kb):
    for section in (kb.classes, kb.ingredients, kb.products, kb.interactions, kb.allergy_groups,
                    kb.duplicate_classes, kb.dose_limits):
        for e in section:
            assert e.source.citation.strip(), e.id
            assert e.source.basis in ("published", "assigned", "unverified"), e.id


def test_all_15_onc_high_priority_pairs_with_members_on_both_sides(kb):
    onc = {ix.onc_row: ix for ix in kb.onc_high_priority()}
    assert set(onc) == set(ONC_15)
    for row, name in ONC_15.items():
        ix = onc[row]
        assert ix.name == name, row
        assert ix.severity == "contraindicated" and ix.interrupts, row
        assert kb.members_of(ix.a) and kb.members_of(ix.b), row
        assert ix.source.ref == "onc-2012" and f"row {row}" in ix.source.section


def test_interactions_cover_every_severity_with_sources(kb):
    counts = kb.counts()["interactions_by_severity"]
    assert all(counts[s] >= 3 for s in SEVERITIES), counts
    for ix in kb.interactions:
        assert ix.mechanism and ix.management, ix.id


def test_every_demo_generator_drug_and_allergen_is_known(kb):
    drugs = {(rx, name) for _, _, meds in CHRONIC + ACUTE for rx, name, *_ in meds}
    drugs |= {(rx, name) for rx, name, _ in ALLERGENS}
    for rx, name in drugs:
        ingredients = kb.ingredients_of(RXNORM, rx)
        assert len(ingredients) == 1, (rx, name)
        assert kb.ingredient(ingredients[0]).rxnorm == rx


def test_the_demo_region_has_real_findings(kb):
    assert [ix.severity for ix in kb.interactions_between("simvastatin", "clarithromycin")] == ["contraindicated"]
    assert kb.interactions_between("warfarin", "fluconazole")[0].severity == "major"
    assert kb.interactions_between("clopidogrel", "omeprazole")[0].severity == "major"
    assert kb.interactions_between("digoxin", "amiodarone")[0].severity == "major"
    assert kb.interactions_between("lisinopril", "spironolactone")[0].severity == "moderate"
    assert kb.interactions_between("metoprolol", "amlodipine")[0].severity == "minor"


# -- lookups ------------------------------------------------------------------------------
def test_warfarin_and_an_nsaid_are_a_major_interaction_either_way_round(kb):
    for a, b in (("warfarin", "ibuprofen"), ("ibuprofen", "warfarin"), ("warfarin", "diclofenac")):
        found = kb.interactions_between(a, b)
        assert found and found[0].severity == "major" and found[0].interrupts
        assert found[0].source.citation and not found[0].onc_high_priority


def test_minor_interaction_does_not_interrupt(kb):
    ix = kb.interactions_between("metoprolol", "ibuprofen")
    assert ix and ix[0].severity == "minor" and not ix[0].interrupts
    assert ix[0].source.ref == "onc-2013" and ix[0].source.basis == "assigned"


def test_same_ingredient_is_a_duplicate_not_an_interaction(kb):
    assert kb.interactions_between("warfarin", "warfarin") == []
    assert kb.duplicate_class("warfarin", "warfarin").id == "same-ingredient"


def test_classes_of_an_ingredient(kb):
    assert {"macrolide", "cyp3a4-inhibitor-strong", "qt-known-risk"} <= kb.classes_of("clarithromycin")
    assert kb.classes_of("no-such-drug") == frozenset()


def test_amoxicillin_allergy_extends_to_cefalexin_through_the_side_chain_not_to_ceftriaxone(kb):
    group = kb.cross_sensitive("amoxicillin", "cephalexin")
    assert group is not None and group.id == "bl-r1-aminobenzyl" and group.kind == "side-chain"
    assert group.source.citation and group.source.url
    assert kb.cross_sensitive("amoxicillin", "ceftriaxone") is None
    assert kb.cross_sensitive("ceftriaxone", "cefotaxime").id == "bl-r1-methoxyimino"
    assert kb.cross_sensitive("ceftazidime", "aztreonam").id == "bl-r1-ceftazidime-aztreonam"
    assert kb.cross_sensitive("amoxicillin", "cefazolin") is None  # cefazolin shares no side chain


def test_penicillin_allergy_covers_penicillins_but_not_all_cephalosporins(kb):
    assert kb.cross_sensitive("penicillin", "amoxicillin").id == "penicillins"
    assert kb.cross_sensitive("penicillin", "cephalexin") is None
    assert kb.cross_sensitive("amoxicillin", "amoxicillin") is None  # a direct match, not cross-sensitivity


def test_allergen_may_be_a_class(kb):
    assert kb.cross_sensitive("nsaid", "aspirin").id == "nsaid-cox1-cross-intolerance"


def test_sulfonamide_antibiotic_allergy_does_not_extend_to_non_antibiotic_sulfonamides(kb):
    assert kb.cross_sensitive("sulfamethoxazole", "sulfadiazine").id == "sulfonamide-antibiotics"
    for drug in ("furosemide", "hydrochlorothiazide", "glyburide", "celecoxib"):
        assert kb.cross_sensitive("sulfamethoxazole", drug) is None, drug


def test_nsaid_cross_intolerance_spares_celecoxib_and_says_when_it_applies(kb):
    group = kb.cross_sensitive("aspirin", "ibuprofen")
    assert group.id == "nsaid-cox1-cross-intolerance" and "cross-intolerant" in group.condition
    assert kb.cross_sensitive("aspirin", "celecoxib") is None


def test_two_nsaids_are_a_duplicate_and_so_are_an_ace_inhibitor_and_an_arb(kb):
    assert kb.duplicate_class("ibuprofen", "naproxen").id == "dup-nsaid"
    assert kb.duplicate_class("lisinopril", "losartan").id == "dup-raas"
    assert kb.duplicate_class("omeprazole", "pantoprazole").id == "dup-ppi"
    assert kb.duplicate_class("simvastatin", "atorvastatin").id == "dup-statin"
    assert kb.duplicate_class("ibuprofen", "aspirin") is None
    assert kb.duplicate_class("amlodipine", "metformin") is None


def test_local_codes_map_products_to_ingredients(kb):
    # the same drug under two local codes
    assert kb.ingredients_of(LOCAL_DRUG, "LD-0001") == kb.ingredients_of(LOCAL_DRUG, "LD-0002") == ("amoxicillin",)
    # a Chinese patent medicine with glibenclamide is a duplicate of glibenclamide itself
    (xiaoke,) = kb.ingredients_of(LOCAL_DRUG, "LD-0101")
    assert kb.duplicate_class(xiaoke, kb.ingredients_of(RXNORM, "4815")[0]).id == "same-ingredient"
    # a cold remedy that hides paracetamol
    assert "acetaminophen" in kb.ingredients_of(LOCAL_DRUG, "LD-0102")
    # an NSAID inside a Chinese patent medicine
    assert kb.duplicate_class(kb.ingredients_of(LOCAL_DRUG, "LD-0106")[0], "ibuprofen").id == "dup-nsaid"
    assert kb.ingredients_of(LOCAL_DRUG, "nope") == ()


def test_tibetan_medicines_are_listed_with_their_ingredients_marked_unknown(kb):
    tibetan = [p for p in kb.products if p.kind == "tibetan-medicine"]
    names = {p.name_zh for p in tibetan}
    assert {"仁青常觉", "二十五味珍珠丸"} <= names
    for p in tibetan:
        assert p.ingredients == () and not p.ingredients_complete and p.unmapped_ingredients
        assert p.source.basis == "unverified"


def test_paediatric_paracetamol_limit_is_by_weight(kb):
    child = kb.dose_limit("acetaminophen", "oral", age_years=6, weight_kg=20)
    assert child.unit == "mg" and child.max_single == 300 and child.max_daily == 1500
    assert not child.needs_weight
    # the absolute cap applies to a heavy child
    heavy = kb.dose_limit("acetaminophen", "oral", age_years=11, weight_kg=90)
    assert heavy.max_single == 1000 and heavy.max_daily == 4000
    # without a weight the per-kg limit cannot be worked out, and the check is told so
    unknown = kb.dose_limit("acetaminophen", "oral", age_years=6)
    assert unknown.needs_weight and unknown.max_single == 1000


def test_route_by_snomed_code_and_iv_neonate_band(kb):
    neonate = kb.dose_limit("acetaminophen", "47625008", age_years=10 / 365.25, weight_kg=3.5)
    assert neonate.band.label == "neonate" and neonate.max_single == pytest.approx(43.75)
    assert neonate.max_daily == pytest.approx(175)
    assert neonate.source.basis == "published"
    adult = kb.dose_limit("acetaminophen", "oral", age_years=40, weight_kg=70)
    assert (adult.max_single, adult.max_daily) == (1000, 4000)
    assert kb.dose_limit("acetaminophen", "rectal", age_years=40) is None


def test_elderly_and_age_contraindicated_bands(kb):
    assert kb.dose_limit("tramadol", "oral", age_years=80).max_daily == 300
    assert kb.dose_limit("tramadol", "oral", age_years=50).max_daily == 400
    assert kb.dose_limit("tramadol", "oral", age_years=8).contraindicated
    assert kb.dose_limit("citalopram", "oral", age_years=70).max_daily == 20


def test_counts(kb):
    c = kb.counts()
    assert c["ingredients"] >= 150 and c["products"] >= 20 and c["onc_high_priority"] == 15
    assert c["allergy_groups"] >= 8 and c["duplicate_classes"] >= 10 and c["dose_limits"] >= 20


# -- validation ---------------------------------------------------------------------------
def test_unknown_severity_is_refused_naming_entry_and_field(raw):
    _entry(raw, "interactions", "label-warfarin-nsaid")["severity"] = "severe"
    msg = _refused(raw)
    assert "(label-warfarin-nsaid).severity" in msg and "unknown severity 'severe'" in msg


def test_interaction_member_not_in_the_drug_list_is_refused(raw):
    _entry(raw, "interactions", "onc-04")["a"]["ingredients"] = ["atazanavirr"]
    msg = _refused(raw)
    assert "(onc-04).a.ingredients" in msg and "unknown ingredient 'atazanavirr'" in msg


def test_unknown_class_is_refused(raw):
    _entry(raw, "interactions", "onc-08")["b"]["classes"] = ["mao-inhibitors"]
    assert "(onc-08).b.classes" in _refused(raw)


def test_duplicate_id_is_refused(raw):
    raw["interactions"].append(copy.deepcopy(_entry(raw, "interactions", "onc-03")))
    msg = _refused(raw)
    assert "(onc-03).id" in msg and "duplicate id" in msg


def test_duplicate_code_is_refused_naming_both_entries(raw):
    _entry(raw, "ingredients", "naproxen")["rxnorm"] = "5640"  # ibuprofen's RxCUI
    msg = _refused(raw)
    assert "(naproxen).rxnorm" in msg and "duplicate code" in msg and "(ibuprofen)" in msg


def test_duplicate_local_code_is_refused(raw):
    _entry(raw, "products", "local-LD-0002")["codes"] = [{"system": LOCAL_DRUG, "code": "LD-0001"}]
    msg = _refused(raw)
    assert "(local-LD-0002).codes[0]" in msg and "(local-LD-0001)" in msg


def test_negative_dose_is_refused(raw):
    _entry(raw, "dose_limits", "ibuprofen-oral")["bands"][2]["max_daily"] = -3200
    msg = _refused(raw)
    assert "(ibuprofen-oral).bands[2].max_daily" in msg and "positive" in msg


def test_bad_age_and_unknown_unit_and_route_are_refused(raw):
    limit = _entry(raw, "dose_limits", "amoxicillin-oral")
    limit["bands"][0]["age_to"] = "3 months"
    limit["unit"] = "milligram"
    limit["route"] = "per-os"
    msg = _refused(raw)
    assert "(amoxicillin-oral).bands[0].age_to" in msg
    assert "(amoxicillin-oral).unit" in msg and "(amoxicillin-oral).route" in msg


def test_missing_source_is_refused(raw):
    del _entry(raw, "allergy_groups", "bl-r1-aminobenzyl")["source"]
    msg = _refused(raw)
    assert "(bl-r1-aminobenzyl).source" in msg and "missing source" in msg


def test_unknown_basis_and_unknown_source_ref_are_refused(raw):
    _entry(raw, "interactions", "onc-06")["source"]["basis"] = "folklore"
    _entry(raw, "interactions", "onc-20")["source"]["ref"] = "ddinter"
    msg = _refused(raw)
    assert "(onc-06).source.basis" in msg and "(onc-20).source.ref" in msg


def test_product_without_mapped_ingredients_must_say_so(raw):
    p = _entry(raw, "products", "local-LD-0301")
    del p["unmapped_ingredients"]
    assert "(local-LD-0301).unmapped_ingredients" in _refused(raw)
    p["ingredients_complete"] = True
    assert "(local-LD-0301).ingredients" in _refused(raw)


def test_every_error_is_an_issue_with_its_element(raw):
    _entry(raw, "interactions", "onc-03")["severity"] = "bad"
    _entry(raw, "dose_limits", "tramadol-oral")["ingredient"] = "tramadool"
    with pytest.raises(KnowledgeError) as exc:
        parse(raw)
    expressions = [e for issue in exc.value.issues for e in issue.expression]
    assert any(e.endswith("(onc-03).severity") for e in expressions)
    assert any(e.endswith("(tramadol-oral).ingredient") for e in expressions)
    assert exc.value.status == 400


def test_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(KnowledgeError, match="cannot read"):
        load(path)


# -- a region extends the file --------------------------------------------------------------
def test_merge_replaces_same_ids_and_adds_new_ones(kb, tmp_path):
    extension = {
        "version": "qh-vendor-2027.1",
        "date": "2027-01-15",
        "provenance": {"sources": [{"id": "vendor", "citation": "Licensed vendor knowledge base 2027.1",
                                    "licence": "licensed to the region; not redistributable"}]},
        "ingredients": [{"id": "levetiracetam", "rxnorm": "114477", "name_en": "levetiracetam", "name_zh": "左乙拉西坦",
                         "classes": [], "source": {"ref": "vendor", "basis": "published"}}],
        "products": [{"id": "qh-0001", "codes": [{"system": "https://qinghai.example.org/drug", "code": "QH0001"}],
                      "name_zh": "布洛芬片", "kind": "chemical", "ingredients": ["ibuprofen"],
                      "source": {"ref": "vendor"}}],
        "interactions": [
            {**_raw_interaction(kb, "onc-ni-28"), "severity": "moderate", "source": {"ref": "vendor"}},
            {"id": "vendor-1", "name": "Levetiracetam + warfarin (test)", "a": {"ingredients": ["levetiracetam"]},
             "b": {"classes": ["vka"]}, "severity": "minor", "mechanism": "m", "management": "g",
             "source": {"ref": "vendor"}},
        ],
    }
    path = tmp_path / "vendor.json"
    path.write_text(json.dumps(extension, ensure_ascii=False), encoding="utf-8")
    merged = merge(kb, path)
    assert merged.version == "1+qh-vendor-2027.1" and merged.date == "2027-01-15"
    # replaced in place
    assert merged.interactions_between("metoprolol", "ibuprofen")[0].severity == "moderate"
    assert merged.interactions_between("metoprolol", "ibuprofen")[0].source.citation.startswith("Licensed vendor")
    assert len(merged.interactions) == len(kb.interactions) + 1
    # added, referring to the base's classes and ingredients
    assert merged.interactions_between("warfarin", "levetiracetam")[0].id == "vendor-1"
    assert merged.ingredients_of("https://qinghai.example.org/drug", "QH0001") == ("ibuprofen",)
    assert merged.ingredients_of(RXNORM, "114477") == ("levetiracetam",)
    # the base is unchanged
    assert kb.interactions_between("metoprolol", "ibuprofen")[0].severity == "minor"
    assert {"vendor", "onc-2012"} <= {s["id"] for s in merged.provenance["sources"]}


def test_merge_validates_the_whole(kb):
    bad = {"version": "x", "interactions": [{"id": "v", "name": "n", "a": {"ingredients": ["nope"]},
                                             "b": {"classes": ["vka"]}, "severity": "major", "mechanism": "m",
                                             "management": "g", "source": {"citation": "c"}}]}
    with pytest.raises(KnowledgeError, match=r"\(v\)\.a\.ingredients"):
        merge(kb, bad)


def _raw_interaction(kb, interaction_id):
    return copy.deepcopy(next(e for e in kb.raw["interactions"] if e["id"] == interaction_id))


def test_docs_state_the_current_counts(kb):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "medsafety.md").read_text(encoding="utf-8")
    c = kb.counts()
    by = c["interactions_by_severity"]
    assert f"| ingredients | {c['ingredients']} |" in doc
    assert f"| classes | {c['classes']} |" in doc
    assert f"| local drug dictionary | {c['products']} products |" in doc
    assert (f"| interactions | {c['interactions']} | {by['contraindicated']} contraindicated, {by['major']} major, "
            f"{by['moderate']} moderate, {by['minor']} minor |") in doc
    assert f"| allergy cross-sensitivity groups | {c['allergy_groups']} |" in doc
    assert f"| duplicate-therapy classes | {c['duplicate_classes']} |" in doc
    assert f"| dose limits | {c['dose_limits']} ({c['dose_bands']} bands) |" in doc
    assert f"the {len(kb.provenance['rxnorm_not_cross_checked'])} not found there" in doc
