"""View helpers of the EMPI review pages: labels of the compared fields and of the scorer's
levels (translated where shown), and where an action sends the browser next.  The access
check and the audit records are the review service's (``healthlink.identity.Review``)."""

from __future__ import annotations

from healthlink.web.i18n import N_

# the comparisons of empi.REGION, and the records' fields shown side by side
COMPARISONS = {"name": N_("Name"), "birth_date": N_("Birth date"), "sex": N_("Sex"),
               "resident_id": N_("Resident ID"), "phone": N_("Phone"), "address": N_("Address")}
RECORD_FIELDS = [("name", N_("Name")), ("name_pinyin", N_("Pinyin")), ("birth_date", N_("Birth date")),
                 ("sex", N_("Sex")), ("resident_id", N_("Resident ID")), ("phone", N_("Phone")),
                 ("county", N_("County")), ("address", N_("Address")), ("institution", N_("Institution"))]
# the level labels of empi.REGION (a new label shows untranslated until added here)
LEVELS = {label: label for label in (
    N_("name missing"), N_("same characters"), N_("same variant key"), N_("pinyin Jaro-Winkler >= 0.88"),
    N_("All other comparisons"), N_("birth_date missing"), N_("birth_date equal"),
    N_("birth_date one field differs or within 3 days"), N_("sex missing"), N_("sex equal"),
    N_("resident_id missing"), N_("resident_id equal"), N_("resident_id one typo apart"), N_("phone missing"),
    N_("phone equal"), N_("address missing"), N_("address equal"), N_("same county"))}
KINDS = {"link": N_("link"), "keep-apart": N_("keep apart"), "merge": N_("merge"), "unmerge": N_("unmerge")}
METHODS = {"new": N_("founded the Person"), "deterministic": N_("deterministic"),
           "probabilistic": N_("probabilistic"), "manual": N_("reviewer's decision")}


def when(us: int | None) -> str:
    """Microseconds since the epoch as a UTC date and time (the decision history)."""
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(us / 1e6)) if us else "—"
