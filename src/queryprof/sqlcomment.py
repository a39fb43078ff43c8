"""Route tags on SQL, sqlcommenter style: ``SELECT ... /*route='/authors/{author_id}'*/``.

With ``sql_route_tags=True`` each statement of a request carries its route template, so that
``pg_stat_activity``, the database's logs and slow-query logs can be tied to an endpoint.
The tag is static per route: a per-request value (a trace id) would make every statement
text unique and defeat asyncpg's prepared-statement cache and the database's own caches.

The value is URL-encoded as the sqlcommenter specification asks, keeping the characters a
route template is made of as they are. A route that would need a ``%`` (which drivers with
the ``format`` paramstyle read as a placeholder) or a quote is not tagged. The fingerprinter
strips comments, so tagged and untagged statements have the same shape.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

_SAFE = "/{}:_-.~,;=@!$&()+"


@lru_cache(maxsize=1024)
def route_comment(route: str) -> str | None:
    """The comment to append for this route template, or None when it cannot be tagged."""
    value = quote(route, safe=_SAFE)
    if "%" in value:
        return None
    return f" /*route='{value}'*/"


def tag(statement: str, comment: str) -> str:
    """``statement`` with the comment appended, unless it holds a comment already.

    sqlcommenter leaves a statement that has comments alone; so do we.
    """
    if "/*" in statement or "--" in statement:
        return statement
    end = len(statement.rstrip())
    if statement[:end].endswith(";"):  # keep the terminator last
        end -= 1
        return statement[:end] + comment + statement[end:]
    return statement + comment
