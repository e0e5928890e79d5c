"""The per-upload report: what happened to every record, by type and by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Report:
    upload_id: str
    institution: str
    read: Counter = field(default_factory=Counter)  # type -> records read
    accepted: Counter = field(default_factory=Counter)  # type -> new resources
    updated: Counter = field(default_factory=Counter)  # type -> new versions of stored ones
    unchanged: Counter = field(default_factory=Counter)  # type -> identical resends
    quarantined: Counter = field(default_factory=Counter)  # type -> records quarantined
    reasons: Counter = field(default_factory=Counter)  # reason code -> records quarantined
    pending_empi: int = 0  # new or changed Patients queued for the EMPI's batch linking
    linked_empi: int = 0  # queued Patients linked to Persons when the upload ended

    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(self, k).values())
                for k in ("read", "accepted", "updated", "unchanged", "quarantined")}

    def to_json(self) -> dict:
        return {"upload": self.upload_id, "institution": self.institution, "totals": self.totals(),
                **{k: dict(sorted(getattr(self, k).items()))
                   for k in ("read", "accepted", "updated", "unchanged", "quarantined", "reasons")},
                "pendingEmpi": self.pending_empi, "linkedEmpi": self.linked_empi}
