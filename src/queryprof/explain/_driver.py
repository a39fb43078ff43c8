"""Replaying a statement through the driver, the way SQLAlchemy sent it.

The slow statement's record keeps the exact text and parameters SQLAlchemy handed to the
DBAPI cursor. An EXPLAIN prefixes that text and goes through the same dialect call
(``do_execute``, or ``do_execute_no_params`` when the original had none) with the same
parameters, so the driver binds them exactly as it did the first time; nothing is pasted into
SQL. Going through the dialect method rather than ``Connection.exec_driver_sql`` keeps the
EXPLAIN out of SQLAlchemy's execution events: it is never recorded into a scope (not even a
process-wide one), traced, or echoed as if the application had run it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from queryprof import capture


@dataclass(frozen=True, slots=True)
class Request:
    """One statement to explain, and how."""

    statement: str
    parameters: Any
    executemany: bool
    analyze: bool  # EXPLAIN ANALYZE: only ever set for a read-only SELECT
    timeout: float  # seconds, for the EXPLAIN statement on the server
    capture_parameters: bool


def first_parameters(parameters: Any, executemany: bool) -> Any:
    """The parameters of one execution: the first set of an ``executemany``."""
    if not executemany or parameters is capture._NO_PARAMS:
        return parameters
    # An "insertmanyvalues" batch is one flat set; a real executemany is a list of sets.
    if isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes) and parameters:
        first = parameters[0]
        if isinstance(first, Mapping | tuple | list):
            return first
    return parameters


def replay(dialect: Any, cursor: Any, prefix: str, request: Request) -> None:
    """Run ``prefix + statement`` with the original parameters, through the dialect."""
    parameters = first_parameters(request.parameters, request.executemany)
    text = prefix + request.statement
    if parameters is capture._NO_PARAMS:
        dialect.do_execute_no_params(cursor, text, None)
    else:
        dialect.do_execute(cursor, text, parameters, None)


def run(dialect: Any, cursor: Any, text: str, *values: Any) -> None:
    """Run queryprof's own statement; each ``{}`` in ``text`` is a bound parameter."""
    if not values:
        dialect.do_execute_no_params(cursor, text, None)
        return
    style = dialect.paramstyle
    if style in ("pyformat", "named"):
        names = [f"qp_{i}" for i in range(len(values))]
        marks = [f"%({n})s" if style == "pyformat" else f":{n}" for n in names]
        dialect.do_execute(cursor, text.format(*marks), dict(zip(names, values, strict=True)), None)
        return
    if style == "numeric_dollar":
        marks = [f"${i + 1}" for i in range(len(values))]
    elif style == "numeric":
        marks = [f":{i + 1}" for i in range(len(values))]
    else:  # qmark, format
        marks = ["?" if style == "qmark" else "%s"] * len(values)
    dialect.do_execute(cursor, text.format(*marks), tuple(values), None)


def dbapi_of(connection: Any) -> Any:
    """The connection's own DBAPI connection, for cursors that :func:`replay` uses."""
    dbapi = connection.connection.dbapi_connection
    if dbapi is None:
        raise RuntimeError("the connection was closed before the EXPLAIN could run")
    return dbapi
