"""Master patient index: the matching core (names, IDs, flat records, training, scoring,
batch linking).  No HTTP and no database tables here; docs/empi.md, ADR 0010.

Public surface:

* :func:`flat_record` — a FHIR Patient as the flat record the matcher compares;
* :func:`variant_key`, :func:`pinyin_key`, :func:`normalise_name` — name keys;
* :func:`one_typo_apart`, :func:`resident_id_valid` — resident-ID helpers;
* :data:`REGION` — the comparison set for our Patients (``ComparisonSet`` for others);
* :func:`train` and :class:`Model` — Splink training and the versioned model artefact;
* :class:`Scorer` — the pure-Python pair scorer real-time linking uses;
* :func:`link_batch` — Splink batch prediction and clustering at the thresholds.
"""

from healthlink.empi.batch import LinkResult, Pair, link_batch
from healthlink.empi.comparisons import REGION, Comparison, ComparisonSet, Deterministic, Level
from healthlink.empi.ids import one_typo_apart, resident_id_valid
from healthlink.empi.model import Model, train
from healthlink.empi.names import normalise_name, pinyin_key, variant_key
from healthlink.empi.records import FlatRecord, flat_record
from healthlink.empi.scorer import FieldScore, Score, Scorer

__all__ = ["REGION", "Comparison", "ComparisonSet", "Deterministic", "FieldScore", "FlatRecord", "Level",
           "LinkResult", "Model", "Pair", "Score", "Scorer", "flat_record", "link_batch", "normalise_name",
           "one_typo_apart", "pinyin_key", "resident_id_valid", "train", "variant_key"]
