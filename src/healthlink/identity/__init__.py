"""The master patient index at run time: Patient -> Person links kept in the platform's
database, linking in the unit of work of a Patient write and in one batch after a bulk
upload (docs/identity.md).  Scores with the matching core in :mod:`healthlink.empi`.

Public surface: :class:`Identity` (``Platform.identity``), :class:`LinkOutcome`,
:func:`block_keys`, :data:`EMPI_TASK`; the review queue and reviewers' actions
(:class:`Review`, :func:`manual_constraints`, in :mod:`.review`).
"""

from healthlink.identity.keys import block_keys
from healthlink.identity.local import LocalPatient as LocalPatient, LocalPatients as LocalPatients
from healthlink.identity.review import (
    Decision, Explanation, FieldExplanation, ManualConstraints, PersonView, QueueItem, QueuePage, Review,
    manual_constraints,
)
from healthlink.identity.service import EMPI_TASK, Identity, LinkOutcome

__all__ = ["EMPI_TASK", "Decision", "Explanation", "FieldExplanation", "Identity", "LinkOutcome",
           "ManualConstraints", "PersonView", "QueueItem", "QueuePage", "Review", "block_keys",
           "manual_constraints"]
