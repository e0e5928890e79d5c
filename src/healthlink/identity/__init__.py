"""The master patient index at run time: Patient -> Person links kept in the platform's
database, linking in the unit of work of a Patient write and in one batch after a bulk
upload (docs/identity.md).  Scores with the matching core in :mod:`healthlink.empi`.

Public surface: :class:`Identity` (``Platform.identity``), :class:`LinkOutcome`,
:func:`block_keys`, :data:`EMPI_TASK`.
"""

from healthlink.identity.keys import block_keys
from healthlink.identity.service import EMPI_TASK, Identity, LinkOutcome

__all__ = ["EMPI_TASK", "Identity", "LinkOutcome", "block_keys"]
