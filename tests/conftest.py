"""Shared fixtures: real database servers, read from the environment with local defaults.

A server that cannot be reached skips the tests that need it, with the reason, except under
``CI=true``, where that is a failure: CI must never go green by skipping the real databases.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from queryprof import scope as scope_module

pytest_plugins = ["pytester"]

PG_URL = os.environ.get("QUERYPROF_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
PG_SYNC_URL = os.environ.get(
    "QUERYPROF_PG_SYNC_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("QUERYPROF_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
MYSQL_SYNC_URL = os.environ.get(
    "QUERYPROF_MYSQL_SYNC_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)

_reachable: dict[str, str | None] = {}


def _unreachable_reason(url: str) -> str | None:
    parts = urlsplit(url.replace("+asyncpg", "").replace("+aiomysql", ""))
    address = (parts.hostname or "127.0.0.1", parts.port or 0)
    if address not in _reachable:
        try:
            socket.create_connection(address, timeout=2).close()
            _reachable[address] = None
        except OSError as exc:
            _reachable[address] = f"{url} is not reachable: {exc}"
    return _reachable[address]


def require_server(url: str) -> None:
    """Skip (or, under CI=true, fail) when the database server of ``url`` is down."""
    if url.startswith("sqlite"):
        return
    reason = _unreachable_reason(url)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run against real PostgreSQL and MariaDB")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_leftover_scopes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends outside any scope: a leaked scope would skew the next.

    The one exception is the test's own scope, opened by queryprof's pytest plugin before the
    fixtures when the test counts their statements too (``include_setup=True``); the plugin
    closes it before any fixture is torn down.
    """
    plugin = request.config.pluginmanager.get_plugin("queryprof")
    own = plugin.scope_of(request.node) if plugin is not None else None
    assert scope_module.current_scope() is None
    assert scope_module.process_scopes in ((), (own,))
    yield
    assert scope_module.process_scopes == ()
