"""The EMPI matching core (docs/empi.md, ADR 0010): name keys, ID typos, flat records, the
trained model, the pure-Python scorer against Splink, and batch linking of a small region.

Pure tests (no database): they run the same under both HEALTHLINK_TEST_DB modes."""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import duckdb
import pytest
from pydantic import ValidationError

from healthlink.demogen import Options
from healthlink.demogen.names import FEMALE, MALE, NEUTRAL
from healthlink.demogen.stream import patient_records
from healthlink.empi import (REGION, Model, Scorer, flat_record, link_batch, one_typo_apart, train,
                             variant_key)
from healthlink.empi.batch import predict_pairs
from healthlink.empi.similarity import damerau_levenshtein, jaro_winkler
from healthlink.fhir.identifiers import RESIDENT_ID_SYSTEM, resident_id_check_digit
from healthlink.settings import Settings

AUTO, REVIEW = Settings().empi_auto_link_threshold, Settings().empi_review_threshold
RECORDS = 3_000


def _rid(division: str, birth: str, seq: int) -> str:
    body = f"{division}{birth.replace('-', '')}{seq:03d}"
    return body + resident_id_check_digit(body)


def _patient(pid: str, name: str, birth: str, *, sex: str = "male", rid: str | None = None,
             phone: str | None = "13899761234", county: str = "称多县", township: str = "称文镇") -> dict:
    res: dict = {"resourceType": "Patient", "id": pid, "name": [{"text": name}], "gender": sex,
                 "birthDate": birth, "telecom": [{"system": "phone", "value": phone}] if phone else [],
                 "address": [{"use": "home", "district": county, "text": f"青海省玉树藏族自治州{county}{township}"}],
                 "managingOrganization": {"reference": "Organization/chenduo-county"}}
    if rid:
        res["identifier"] = [{"system": RESIDENT_ID_SYSTEM, "value": rid}]
    return res


@pytest.fixture(scope="module")
def region() -> tuple[list[dict], dict[str, str]]:
    recs = list(patient_records(Options(patients=RECORDS, seed=11, clinical=False)))
    return [dict(flat_record(r.resource)) for r in recs], {r.patient_id: r.person.key for r in recs}


@pytest.fixture(scope="module")
def model(region) -> Model:  # noqa: ANN001
    return train([region[0]], REGION, u_max_pairs=2e5, seed=1, version="test")


@pytest.fixture(scope="module")
def scorer(model: Model) -> Scorer:
    return Scorer(model, REGION)


# ---------------------------------------------------------------- names and IDs

def test_transliteration_variants_share_the_variant_key() -> None:
    assert variant_key("次仁") == variant_key("才仁") == variant_key("泽仁") == variant_key("才让")
    assert variant_key("次仁卓玛") == variant_key("才仁卓嘛")
    assert variant_key("扎西多杰") == variant_key("扎喜多吉")
    assert variant_key("尼玛拉毛") == variant_key("尼马拉姆")
    assert variant_key("次仁卓玛") != variant_key("次仁拉毛")
    assert variant_key("扎西") != variant_key("尼玛")


def test_variant_table_covers_every_variant_the_generator_writes() -> None:
    keys_seen: dict[str, tuple[str, ...]] = {}
    for group in (*NEUTRAL, *MALE, *FEMALE):
        keys = {variant_key(s) for s in group}
        assert len(keys) == 1, f"spellings of one name part get different keys: {group}"
        key = keys.pop()
        assert key not in keys_seen, f"{group} and {keys_seen.get(key)} collapse into one key"
        keys_seen[key] = group


def test_names_without_family_name_and_latin_names_get_keys() -> None:
    only_pinyin = flat_record(_patient("p1", "Cairen Zhuoma", "1986-04-12"))
    assert only_pinyin["name_pinyin"] == "cairenzhuoma"
    tibetan = flat_record(_patient("p2", "才仁·卓玛", "1986-04-12"))
    assert tibetan["name"] == "才仁卓玛" and tibetan["name_pinyin"] == "cairenzhuoma"


def test_one_typo_apart_means_one_substitution_or_one_adjacent_swap() -> None:
    assert one_typo_apart("632722198604121235", "632729198604121235")
    assert one_typo_apart("632722198604121235", "632722198640121235")  # swapped 0/4
    assert not one_typo_apart("632722198604121235", "632722198604121235")
    assert not one_typo_apart("632722198604121235", "632722198605131235")  # two substitutions
    assert not one_typo_apart("632722198604121235", "63272219860412123")  # a character missing


def test_python_similarities_equal_duckdbs() -> None:
    rng = random.Random(3)
    pairs = [("".join(rng.choice("abcde") for _ in range(rng.randint(1, 9))),
              "".join(rng.choice("abcde") for _ in range(rng.randint(1, 9)))) for _ in range(3000)]
    pairs += [("cairenzhuoma", "cirenzhuoma"), ("zhaxiduojie", "zhaxiduoji"), ("nima", "nimalamao")]
    con = duckdb.connect()
    rows = con.execute("select jaro_winkler_similarity(a, b), damerau_levenshtein(a, b) "
                       "from (select unnest($1) a, unnest($2) b)",
                       [[a for a, _ in pairs], [b for _, b in pairs]]).fetchall()
    for (a, b), (jw, dl) in zip(pairs, rows, strict=True):
        assert jaro_winkler(a, b) == pytest.approx(jw, abs=1e-12), (a, b)
        assert damerau_levenshtein(a, b) == dl, (a, b)
        if len(a) == len(b):
            assert one_typo_apart(a, b) == (dl == 1), (a, b)


def test_flat_record_from_a_generated_patient() -> None:
    rec = next(r.resource for r in patient_records(Options(patients=1, seed=11, clinical=False)))
    flat = flat_record(rec)
    assert flat["record_id"] == rec["id"] and flat["birth_date"] == rec["birthDate"]
    assert flat["name"] == rec["name"][0]["text"] and flat["sex"] == rec["gender"]
    assert flat["county"] == rec["address"][0]["district"] and flat["phone"] == rec["telecom"][0]["value"]
    assert flat["institution"] == rec["managingOrganization"]["reference"].split("/")[1]
    missing = flat_record({"resourceType": "Patient", "id": "x"})
    assert missing["name"] is None and missing["resident_id"] is None and not missing["resident_id_valid"]


# ---------------------------------------------------------------- scoring

def test_valid_id_and_same_birth_date_link_deterministically(scorer: Scorer) -> None:
    rid = _rid("632722", "1986-04-12", 123)
    a = flat_record(_patient("a", "扎西多杰", "1986-04-12", rid=rid))
    b = flat_record(_patient("b", "王强", "1986-04-12", rid=rid, phone=None, county="杂多县"))
    s = scorer.score(a, b)
    assert s.deterministic and s.probability == 1.0
    invalid = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    c, d = (flat_record(_patient(x, "王强", "1986-04-12", rid=invalid, phone=None)) for x in "cd")
    assert not scorer.score(c, d).deterministic  # an invalid ID never links on its own


def test_namesake_with_same_name_and_birth_year_but_other_id_and_phone_stays_apart(scorer: Scorer) -> None:
    a = flat_record(_patient("a", "扎西多杰", "1986-04-12", rid=_rid("632722", "1986-04-12", 123)))
    b = flat_record(_patient("b", "扎西多杰", "1986-09-30", rid=_rid("632722", "1986-09-30", 457),
                             phone="13899765678"))
    s = scorer.score(a, b)
    assert not s.deterministic and s.probability < REVIEW
    assert {f.comparison: f.level for f in s.fields}["name"] == "same characters"


def test_one_mistyped_id_digit_still_links_when_the_rest_agrees(scorer: Scorer) -> None:
    rid = _rid("632722", "1986-04-12", 123)
    typo = rid[:3] + ("1" if rid[3] != "1" else "2") + rid[4:]
    a = flat_record(_patient("a", "次仁卓玛", "1986-04-12", sex="female", rid=rid))
    b = flat_record(_patient("b", "才仁卓嘛", "1986-04-12", sex="female", rid=typo))
    s = scorer.score(a, b)
    levels = {f.comparison: f.level for f in s.fields}
    assert levels["resident_id"] == "resident_id one typo apart" and levels["name"] == "same variant key"
    assert not s.deterministic and s.probability >= AUTO


def test_pure_python_scorer_agrees_with_splink(region, model: Model, scorer: Scorer) -> None:  # noqa: ANN001
    records = region[0]
    by_id = {r["record_id"]: r for r in records}
    rows = predict_pairs([records], model)
    assert len(rows) > 2000
    levels_seen = set()
    for left, right, weight, probability in rows:
        s = scorer.score(by_id[left], by_id[right])
        assert s.match_weight == pytest.approx(weight, abs=1e-9)
        assert s.match_probability == pytest.approx(probability, abs=1e-12)
        levels_seen.update((f.comparison, f.level) for f in s.fields)
    assert ("resident_id", "resident_id one typo apart") in levels_seen  # the pairs exercise the levels
    assert ("name", "same variant key") in levels_seen


def test_model_artefact_round_trips(tmp_path: Path, model: Model, scorer: Scorer, region) -> None:  # noqa: ANN001
    path = tmp_path / "model.json"
    model.save(path)
    loaded = Model.load(path)
    assert loaded.as_json() == model.as_json()
    assert loaded.version == "test" and loaded.metadata["splink_version"].startswith("5.")
    records = region[0]
    again = Scorer(loaded, REGION)
    for a, b in zip(records[:200], records[1:201], strict=True):
        assert again.score(a, b) == scorer.score(a, b)
    with pytest.raises(ValueError):
        Model.from_json({**model.as_json(), "format_version": 99})


def test_batch_links_a_small_region_with_high_precision_and_recall(region, model: Model) -> None:  # noqa: ANN001
    records, person = region
    res = link_batch([records], model, REGION, auto_link=AUTO, review=REVIEW)
    assert set(res.clusters) == set(person)
    truth, got = defaultdict(list), defaultdict(list)
    for rid, key in person.items():
        truth[key].append(rid)
    for rid, c in res.clusters.items():
        got[c].append(rid)
    true_pairs = {p for ids in truth.values() for p in combinations(sorted(ids), 2)}
    got_pairs = {p for ids in got.values() for p in combinations(sorted(ids), 2)}
    tp = len(true_pairs & got_pairs)
    assert tp / len(got_pairs) >= 0.995 and tp / len(true_pairs) >= 0.98
    assert all(p.match_probability >= REVIEW for p in res.pairs)


def test_batch_keeps_a_namesake_apart_and_links_a_typo(model: Model) -> None:
    rid = _rid("632722", "1986-04-12", 123)
    recs = [flat_record(_patient("a", "扎西多杰", "1986-04-12", rid=rid)),
            flat_record(_patient("b", "扎喜多吉", "1986-04-12", rid=rid[:6] + rid[7] + rid[6] + rid[8:])),
            flat_record(_patient("c", "扎西多杰", "1986-10-02", rid=_rid("632722", "1986-10-02", 457),
                                 phone="13899765678"))]
    clusters = link_batch([recs], model, REGION, auto_link=AUTO, review=REVIEW).clusters
    assert clusters["a"] == clusters["b"] != clusters["c"]


def test_thresholds_are_settings_and_review_cannot_exceed_auto_link() -> None:
    assert Settings(empi_auto_link_threshold=0.95, empi_review_threshold=0.2).empi_review_threshold == 0.2
    with pytest.raises(ValidationError):
        Settings(empi_auto_link_threshold=0.5, empi_review_threshold=0.9)
    with pytest.raises(ValidationError):
        Settings(empi_auto_link_threshold=1.0)
