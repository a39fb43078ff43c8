"""Masking literal values in plans before they leave the process.

A plan repeats the values of the statement it explains: PostgreSQL's ``Filter: (email =
'ann@example.com'::text)``, MariaDB's ``attached_condition``. Unless the user opted into
``capture_parameters=True``, every string and number literal in a plan's text becomes ``?``
(the way statement shapes show them), in the raw JSON as in the text tree, and in error
messages, which can quote a value too.
"""

from __future__ import annotations

from typing import Any, Final

from queryprof.explain._sql import tokens

# Keys of plan JSON whose string values are names or fixed vocabulary, never values.
_NAME_KEYS: Final = frozenset(
    {
        *("Node Type", "Relation Name", "Alias", "Schema", "Index Name", "Strategy"),
        *("Parent Relationship", "Join Type", "Sort Method", "Sort Space Type"),
        *("Scan Direction", "Operation", "Partial Mode", "Subplan Name", "CTE Name"),
        *("Function Name", "Command"),
        *("table_name", "access_type", "key", "possible_keys", "used_key_parts", "ref"),
        *("key_length", "r_sort_mode", "r_buffer_size", "message", "select_type"),
    }
)


def mask_literals(text: str) -> str:
    """``text`` with each string and number literal replaced by ``?``."""
    out: list[str] = []
    last = 0
    for t in tokens(text):
        if t.kind in ("string", "number"):
            out.append(text[last : t.start])
            out.append("?")
            last = t.end
    out.append(text[last:])
    return "".join(out)


def mask_plan(value: Any, key: str = "") -> Any:
    """A copy of a JSON plan with the literals of every expression masked."""
    if isinstance(value, dict):
        return {k: mask_plan(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_plan(v, key) for v in value]
    if isinstance(value, str) and key not in _NAME_KEYS:
        return mask_literals(value)
    return value


def describe_error(exc: BaseException, *, capture_parameters: bool) -> str:
    """One line for a failed EXPLAIN: the exception class and its first line, values masked.

    Error messages quote values in either kind of quote (``invalid input syntax for type
    integer: "abc"``, MySQL's ``near 'secret' at line 1``), so without ``capture_parameters``
    both are masked, at the price of masking a quoted table name too.
    """
    original = getattr(exc, "orig", None) or exc  # SQLAlchemy's DBAPIError wraps the driver's
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        message = f"{args[1]} [{args[0]}]"  # MySQL drivers: (error code, message)
    else:
        message = str(original)
    message = message.strip().splitlines()[0] if message.strip() else ""
    if not capture_parameters:
        message = mask_literals(message.replace('"', "'").replace("`", "'"))
    message = message[:200]
    name = type(original).__name__
    return f"{name}: {message}" if message else name
