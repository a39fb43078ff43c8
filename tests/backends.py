"""The six database backends the detector tests run on, and their seeded schemas.

Each database (an SQLite file, the PostgreSQL server, the MariaDB server) gets the ``qpt_``
tables created and seeded once, through its sync driver, the first time a test needs it, and
dropped at the end of the session. Tests leave the data as they found it: those that write roll
back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from conftest import MYSQL_SYNC_URL, MYSQL_URL, PG_SYNC_URL, PG_URL
from models import Base, seed

# SQLite has no sleep(): counting to this many rows with a recursive CTE is the slow statement
# (about 0.15 s; comfortably above the 0.05 s threshold the slow-query tests use).
_SQLITE_SLOW_ROWS = 300_000

_SLOW_STATEMENTS = {
    "sqlite": (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        f"WHERE i < {_SQLITE_SLOW_ROWS}) SELECT count(*) FROM n"
    ),
    "postgresql": "SELECT pg_sleep(0.1)",
    "mysql": "SELECT SLEEP(0.1)",
}


@dataclass(frozen=True)
class Backend:
    """One database and driver: ``Backend("postgresql+asyncpg", PG_URL)``."""

    name: str
    url: str  # for SQLite, a template: "{path}" is replaced by the database file
    sync_url: str  # the same database through a sync driver (to create and seed it)

    def __str__(self) -> str:
        return self.name

    @property
    def database(self) -> str:
        """``"sqlite"``, ``"postgresql"`` or ``"mysql"`` (MariaDB)."""
        return self.name.split("+", 1)[0]

    @property
    def is_async(self) -> bool:
        return self.name.endswith(("aiosqlite", "asyncpg", "aiomysql"))

    @property
    def slow_statement(self) -> str:
        """A statement that genuinely takes about 0.1 s or more on this database."""
        return _SLOW_STATEMENTS[self.database]


SQLITE_SYNC = Backend("sqlite+pysqlite", "sqlite+pysqlite:///{path}", "sqlite+pysqlite:///{path}")
SQLITE_ASYNC = Backend("sqlite+aiosqlite", "sqlite+aiosqlite:///{path}", SQLITE_SYNC.url)
PG_SYNC = Backend("postgresql+psycopg", PG_SYNC_URL, PG_SYNC_URL)
PG_ASYNC = Backend("postgresql+asyncpg", PG_URL, PG_SYNC_URL)
MYSQL_SYNC = Backend("mysql+pymysql", MYSQL_SYNC_URL, MYSQL_SYNC_URL)
MYSQL_ASYNC = Backend("mysql+aiomysql", MYSQL_URL, MYSQL_SYNC_URL)

SYNC_BACKENDS = (SQLITE_SYNC, PG_SYNC, MYSQL_SYNC)
ASYNC_BACKENDS = (SQLITE_ASYNC, PG_ASYNC, MYSQL_ASYNC)


class Databases:
    """Creates and seeds the ``qpt_`` tables of each database once; drops them at the end."""

    def __init__(self, sqlite_file: Path) -> None:
        self._sqlite_file = sqlite_file
        self._prepared: dict[str, str] = {}  # database -> its sync URL

    def url_of(self, backend: Backend) -> str:
        """The URL to connect ``backend`` with, its database created and seeded."""
        sync_url = backend.sync_url.format(path=self._sqlite_file)
        if backend.database not in self._prepared:
            engine = create_engine(sync_url)
            try:
                Base.metadata.drop_all(engine)  # what a crashed earlier run left behind
                Base.metadata.create_all(engine)
                with Session(engine) as session:
                    seed(session)
            finally:
                engine.dispose()
            self._prepared[backend.database] = sync_url
        return backend.url.format(path=self._sqlite_file)

    def drop_all(self) -> None:
        for sync_url in self._prepared.values():
            engine = create_engine(sync_url)
            try:
                Base.metadata.drop_all(engine)
            finally:
                engine.dispose()
        self._prepared.clear()
