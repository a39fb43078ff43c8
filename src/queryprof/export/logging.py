"""Findings as WARNING records on the ``queryprof`` logger, one per finding.

The message names the scope (``N+1 in GET /authors: 40 x SELECT ...``); the finding's fields
are in ``extra`` (``record.kind``, ``record.sql``, ``record.location``, ...) for structured
log handlers, and the Finding itself is ``record.queryprof_finding``.
"""

from __future__ import annotations

import logging

from queryprof.findings import LABELS
from queryprof.scope import Scope

logger = logging.getLogger("queryprof")


def log_findings(scope: Scope) -> None:
    if not scope.findings or not logger.isEnabledFor(logging.WARNING):
        return
    for finding in scope.findings:
        logger.warning(
            "%s in %s: %s",
            LABELS[finding.kind],
            scope.name,
            finding.describe(),
            extra={**finding.as_dict(), "queryprof_finding": finding},
        )
