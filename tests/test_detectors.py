"""The detectors on real databases: what each finding says, and what must not be flagged.

Every scenario is written once and runs on each backend of its kind: the sync ``Session``
tests on sqlite+pysqlite, postgresql+psycopg and mysql+pymysql, the ``AsyncSession`` tests on
sqlite+aiosqlite, postgresql+asyncpg and mysql+aiomysql (the backend is in the test id). An
expected call site is the line where the test touched the database, taken with ``Site.touch``,
never a hard-coded number; an expected count of lazy loads is what SQLAlchemy itself reports
(``LazyLoads``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session, joinedload, selectinload, subqueryload

import queryprof
from backends import ASYNC_BACKENDS, SYNC_BACKENDS, Backend, Databases
from conftest import require_server
from models import AUTHORS, BOOKS_PER_AUTHOR, Author, Book, Tag
from queryprof import Finding, Profiler, Scope

T = TypeVar("T")

BOOKS = AUTHORS * BOOKS_PER_AUTHOR
MISSING_TABLE_SQL = "SELECT * FROM qpt_no_such_table"

# -- backends -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    databases = Databases(tmp_path_factory.mktemp("queryprof") / "qpt.sqlite")
    yield databases
    databases.drop_all()


class Db:
    """One backend under test: its engine, and profilers instrumented on it alone."""

    def __init__(self, backend: Backend, engine: Any) -> None:
        self.backend = backend
        self.engine = engine
        self._profilers: list[Profiler] = []

    def profiler(self, **settings: Any) -> Profiler:
        profiler = Profiler(log_findings=False, **settings)
        profiler.instrument(self.engine)
        self._profilers.append(profiler)
        return profiler

    def uninstrument(self) -> None:
        for profiler in self._profilers:
            profiler.uninstrument()


class SyncDb(Db):
    engine: Engine

    def session(self) -> Session:
        return Session(self.engine)


class AsyncDb(Db):
    engine: AsyncEngine

    def session(self) -> AsyncSession:
        return AsyncSession(self.engine)


@pytest.fixture(params=SYNC_BACKENDS, ids=str)
def sync_db(request: pytest.FixtureRequest, databases: Databases) -> Iterator[SyncDb]:
    backend: Backend = request.param
    require_server(backend.url)
    engine = create_engine(databases.url_of(backend))
    with engine.connect():  # the dialect's first-connect queries run here, outside any scope
        pass
    db = SyncDb(backend, engine)
    yield db
    db.uninstrument()
    engine.dispose()


@pytest.fixture(params=ASYNC_BACKENDS, ids=str)
async def async_db(request: pytest.FixtureRequest, databases: Databases) -> AsyncIterator[AsyncDb]:
    backend: Backend = request.param
    require_server(backend.url)
    engine = create_async_engine(databases.url_of(backend))
    # Two pooled connections, opened outside any scope: enough for the asyncio.gather tests.
    async with engine.connect(), engine.connect():
        pass
    db = AsyncDb(backend, engine)
    yield db
    db.uninstrument()
    await engine.dispose()


# -- helpers ------------------------------------------------------------------------------------


class Site:
    """Where a test touched the database: ``site.touch(author.books)`` notes that line."""

    def __init__(self) -> None:
        self.locations: set[str] = set()

    def touch(self, value: T) -> T:
        frame = sys._getframe(1)
        self._note(frame.f_code, frame.f_lineno)
        return value

    def raised(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """Note the test's line an exception came out of (a statement that raised)."""
        self._note(excinfo.tb.tb_frame.f_code, excinfo.tb.tb_lineno)

    def _note(self, code: Any, line: int) -> None:
        path = os.path.relpath(code.co_filename)
        self.locations.add(f"{path}:{line} in {code.co_qualname}")

    @property
    def location(self) -> str:
        assert len(self.locations) == 1, f"touched from several lines: {self.locations}"
        return next(iter(self.locations))


class LazyLoads:
    """How many lazy loads a session ran, as SQLAlchemy reports them (``do_orm_execute``)."""

    def __init__(self, session: Session | AsyncSession) -> None:
        self.count = 0
        sync_session = session.sync_session if isinstance(session, AsyncSession) else session
        event.listen(sync_session, "do_orm_execute", self._on_execute)

    def _on_execute(self, state: ORMExecuteState) -> None:
        if state.lazy_loaded_from is not None:
            self.count += 1


def only_finding(scope: Scope) -> Finding:
    assert len(scope.findings) == 1, scope.findings
    return scope.findings[0]


def findings_of(scope: Scope, kind: str) -> list[Finding]:
    return [f for f in scope.findings if f.kind == kind]


# (parent entity, relationship attribute): one of each kind of relationship
RELATIONSHIPS = [
    pytest.param(Author, "books", id="one-to-many"),
    pytest.param(Book, "author", id="many-to-one"),
    pytest.param(Book, "tags", id="many-to-many"),
    pytest.param(Author, "profile", id="one-to-one"),
]
EAGER_FIX = {
    "Author.books": "selectinload(Author.books)",
    "Book.author": "joinedload(Book.author)",
    "Book.tags": "selectinload(Book.tags)",
    "Author.profile": "joinedload(Author.profile)",
}
# (eager loader, statements it takes: the parents' query and what the loader adds)
EAGER_LOADERS = [
    pytest.param(selectinload, 2, id="selectinload"),
    pytest.param(joinedload, 1, id="joinedload"),
    pytest.param(subqueryload, 2, id="subqueryload"),
]
# (Profiler settings, the N+1 threshold they give)
THRESHOLDS = [
    pytest.param({}, 5, id="default-threshold-5"),
    pytest.param({"n_plus_one_threshold": 3}, 3, id="threshold-3"),
]


# -- N+1: lazy loads in a loop ------------------------------------------------------------------


@pytest.mark.parametrize(("parent", "attribute"), RELATIONSHIPS)
def test_lazy_loads_in_a_loop_are_an_n_plus_one_naming_the_relationship(
    sync_db: SyncDb, parent: Any, attribute: str
) -> None:
    profiler = sync_db.profiler()
    site = Site()
    with sync_db.session() as session, profiler.scope("lazy loop") as scope:
        lazy = LazyLoads(session)
        for obj in session.scalars(select(parent).order_by(parent.id)).all():
            site.touch(getattr(obj, attribute))

    relationship = f"{parent.__name__}.{attribute}"
    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship == relationship
    assert finding.suggestion == EAGER_FIX[relationship]
    assert finding.count == lazy.count >= AUTHORS
    assert finding.location == site.location


@pytest.mark.parametrize(("parent", "attribute"), RELATIONSHIPS)
async def test_awaited_lazy_loads_in_a_loop_are_an_n_plus_one_naming_the_relationship(
    async_db: AsyncDb, parent: Any, attribute: str
) -> None:
    profiler = async_db.profiler()
    site = Site()
    async with async_db.session() as session, profiler.scope("lazy loop") as scope:
        lazy = LazyLoads(session)
        for obj in (await session.scalars(select(parent).order_by(parent.id))).all():
            site.touch(await getattr(obj.awaitable_attrs, attribute))

    relationship = f"{parent.__name__}.{attribute}"
    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship == relationship
    assert finding.suggestion == EAGER_FIX[relationship]
    assert finding.count == lazy.count >= AUTHORS
    assert finding.location == site.location


async def test_lazy_loads_in_run_sync_are_located_in_the_sync_function(async_db: AsyncDb) -> None:
    profiler = async_db.profiler()
    site = Site()

    def list_books(session: Session) -> None:
        for author in session.scalars(select(Author).order_by(Author.id)).all():
            site.touch(author.books)

    async with async_db.session() as session, profiler.scope("run_sync") as scope:
        await session.run_sync(list_books)

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship == "Author.books"
    assert finding.count == AUTHORS
    assert finding.location == site.location


# -- N+1: an explicit query per id --------------------------------------------------------------


def test_session_get_per_id_is_an_n_plus_one_with_an_in_query_fix(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    site = Site()
    with sync_db.session() as session:
        books = session.scalars(select(Book).order_by(Book.id)).all()
        session.expunge_all()
        with profiler.scope("get loop") as scope:
            for book in books:
                site.touch(session.get(Book, book.id))

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship is None
    assert finding.suggestion is not None
    assert "select(Book).where(Book.id.in_(" in finding.suggestion
    assert finding.count == BOOKS
    assert finding.location == site.location


async def test_awaited_session_get_per_id_is_an_n_plus_one_with_an_in_query_fix(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler()
    site = Site()
    async with async_db.session() as session:
        books = (await session.scalars(select(Book).order_by(Book.id))).all()
        session.expunge_all()
        async with profiler.scope("get loop") as scope:
            for book in books:
                site.touch(await session.get(Book, book.id))

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship is None
    assert finding.suggestion is not None
    assert "select(Book).where(Book.id.in_(" in finding.suggestion
    assert finding.count == BOOKS
    assert finding.location == site.location


def test_select_where_id_per_id_is_an_n_plus_one_with_an_in_query_fix(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    site = Site()
    with sync_db.session() as session:
        book_ids = session.scalars(select(Book.id).order_by(Book.id)).all()
        with profiler.scope("select loop") as scope:
            for book_id in book_ids:
                site.touch(session.execute(select(Book).where(Book.id == book_id)).scalar_one())

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship is None
    assert finding.suggestion is not None
    assert "select(Book).where(Book.id.in_(" in finding.suggestion
    assert finding.count == BOOKS
    assert finding.location == site.location


async def test_awaited_select_where_id_per_id_is_an_n_plus_one_with_an_in_query_fix(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler()
    site = Site()
    async with async_db.session() as session:
        book_ids = (await session.scalars(select(Book.id).order_by(Book.id))).all()
        async with profiler.scope("select loop") as scope:
            for book_id in book_ids:
                result = site.touch(await session.execute(select(Book).where(Book.id == book_id)))
                result.scalar_one()

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship is None
    assert finding.suggestion is not None
    assert "select(Book).where(Book.id.in_(" in finding.suggestion
    assert finding.count == BOOKS
    assert finding.location == site.location


# -- not an N+1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("parent", "attribute"), RELATIONSHIPS)
@pytest.mark.parametrize(("loader", "statements"), EAGER_LOADERS)
def test_eager_loading_is_not_an_n_plus_one(
    sync_db: SyncDb, parent: Any, attribute: str, loader: Any, statements: int
) -> None:
    profiler = sync_db.profiler()
    query = select(parent).options(loader(getattr(parent, attribute))).order_by(parent.id)
    with sync_db.session() as session, profiler.scope("eager") as scope:
        for obj in session.scalars(query).unique().all():
            getattr(obj, attribute)

    assert scope.findings == []
    assert scope.query_count == statements


@pytest.mark.parametrize(("parent", "attribute"), RELATIONSHIPS)
@pytest.mark.parametrize(("loader", "statements"), EAGER_LOADERS)
async def test_awaited_eager_loading_is_not_an_n_plus_one(
    async_db: AsyncDb, parent: Any, attribute: str, loader: Any, statements: int
) -> None:
    profiler = async_db.profiler()
    query = select(parent).options(loader(getattr(parent, attribute))).order_by(parent.id)
    async with async_db.session() as session, profiler.scope("eager") as scope:
        for obj in (await session.scalars(query)).unique().all():
            getattr(obj, attribute)

    assert scope.findings == []
    assert scope.query_count == statements


def test_one_lazy_load_after_first_is_not_an_n_plus_one(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    with sync_db.session() as session, profiler.scope("first") as scope:
        author = session.scalars(select(Author).order_by(Author.id)).first()
        assert author is not None
        assert len(author.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == 2


async def test_one_awaited_lazy_load_after_first_is_not_an_n_plus_one(async_db: AsyncDb) -> None:
    profiler = async_db.profiler()
    async with async_db.session() as session, profiler.scope("first") as scope:
        author = (await session.scalars(select(Author).order_by(Author.id))).first()
        assert author is not None
        assert len(await author.awaitable_attrs.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == 2


def test_one_lazy_load_after_get_is_not_an_n_plus_one(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    with sync_db.session() as session:
        author_id = session.scalars(select(Author.id).order_by(Author.id)).first()
        with profiler.scope("get") as scope:
            author = session.get(Author, author_id)
            assert author is not None
            assert len(author.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == 2


async def test_one_awaited_lazy_load_after_get_is_not_an_n_plus_one(async_db: AsyncDb) -> None:
    profiler = async_db.profiler()
    async with async_db.session() as session:
        author_id = (await session.scalars(select(Author.id).order_by(Author.id))).first()
        async with profiler.scope("get") as scope:
            author = await session.get(Author, author_id)
            assert author is not None
            assert len(await author.awaitable_attrs.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == 2


def test_the_same_statement_with_the_same_parameters_is_a_duplicate_not_an_n_plus_one(
    sync_db: SyncDb,
) -> None:
    profiler = sync_db.profiler()
    with sync_db.session() as session:
        book_id = session.scalars(select(Book.id).order_by(Book.id)).first()
        with profiler.scope("same parameters") as scope:
            for _ in range(5):
                session.execute(select(Book).where(Book.id == book_id)).scalar_one()

    finding = only_finding(scope)
    assert finding.kind == "duplicate_query"
    assert finding.count == 5


async def test_the_same_awaited_statement_with_the_same_parameters_is_a_duplicate_not_an_n_plus_one(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler()
    async with async_db.session() as session:
        book_id = (await session.scalars(select(Book.id).order_by(Book.id))).first()
        async with profiler.scope("same parameters") as scope:
            for _ in range(5):
                (await session.execute(select(Book).where(Book.id == book_id))).scalar_one()

    finding = only_finding(scope)
    assert finding.kind == "duplicate_query"
    assert finding.count == 5


# -- thresholds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "threshold"), THRESHOLDS)
def test_lazy_loads_one_under_the_threshold_are_not_flagged(
    sync_db: SyncDb, settings: dict[str, Any], threshold: int
) -> None:
    profiler = sync_db.profiler(**settings)
    query = select(Author).order_by(Author.id).limit(threshold - 1)
    with sync_db.session() as session, profiler.scope("under") as scope:
        for author in session.scalars(query).all():
            assert len(author.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == threshold


@pytest.mark.parametrize(("settings", "threshold"), THRESHOLDS)
def test_lazy_loads_exactly_at_the_threshold_are_flagged(
    sync_db: SyncDb, settings: dict[str, Any], threshold: int
) -> None:
    profiler = sync_db.profiler(**settings)
    query = select(Author).order_by(Author.id).limit(threshold)
    with sync_db.session() as session, profiler.scope("at") as scope:
        for author in session.scalars(query).all():
            assert len(author.books) == BOOKS_PER_AUTHOR

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship == "Author.books"
    assert finding.count == threshold


@pytest.mark.parametrize(("settings", "threshold"), THRESHOLDS)
async def test_awaited_lazy_loads_one_under_the_threshold_are_not_flagged(
    async_db: AsyncDb, settings: dict[str, Any], threshold: int
) -> None:
    profiler = async_db.profiler(**settings)
    query = select(Author).order_by(Author.id).limit(threshold - 1)
    async with async_db.session() as session, profiler.scope("under") as scope:
        for author in (await session.scalars(query)).all():
            assert len(await author.awaitable_attrs.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == threshold


@pytest.mark.parametrize(("settings", "threshold"), THRESHOLDS)
async def test_awaited_lazy_loads_exactly_at_the_threshold_are_flagged(
    async_db: AsyncDb, settings: dict[str, Any], threshold: int
) -> None:
    profiler = async_db.profiler(**settings)
    query = select(Author).order_by(Author.id).limit(threshold)
    async with async_db.session() as session, profiler.scope("at") as scope:
        for author in (await session.scalars(query)).all():
            assert len(await author.awaitable_attrs.books) == BOOKS_PER_AUTHOR

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship == "Author.books"
    assert finding.count == threshold


# -- duplicate queries --------------------------------------------------------------------------


def test_the_same_read_three_times_is_a_duplicate_query(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    site = Site()
    query = select(Author).where(Author.name == "Author 0")
    with sync_db.session() as session, profiler.scope("duplicates") as scope:
        for _ in range(3):
            site.touch(session.scalars(query).all())

    finding = only_finding(scope)
    assert finding.kind == "duplicate_query"
    assert finding.count == 3
    assert finding.location == site.location


async def test_the_same_awaited_read_three_times_is_a_duplicate_query(async_db: AsyncDb) -> None:
    profiler = async_db.profiler()
    site = Site()
    query = select(Author).where(Author.name == "Author 0")
    async with async_db.session() as session, profiler.scope("duplicates") as scope:
        for _ in range(3):
            site.touch(await session.scalars(query)).all()

    finding = only_finding(scope)
    assert finding.kind == "duplicate_query"
    assert finding.count == 3
    assert finding.location == site.location


# -- repeated writes (the sessions roll back: the seeded data stays as it was) ------------------


def test_single_row_inserts_flushed_in_a_loop_are_a_repeated_write(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    site = Site()
    with sync_db.session() as session, profiler.scope("insert loop") as scope:
        for i in range(5):
            session.add(Tag(name=f"new tag {i}"))
            site.touch(session.flush())

    finding = only_finding(scope)
    assert finding.kind == "repeated_write"
    assert finding.count == 5
    assert finding.suggestion is not None
    assert "insert(Tag)" in finding.suggestion
    assert finding.location == site.location


async def test_single_row_inserts_flushed_in_an_async_loop_are_a_repeated_write(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler()
    site = Site()
    async with async_db.session() as session, profiler.scope("insert loop") as scope:
        for i in range(5):
            session.add(Tag(name=f"new tag {i}"))
            site.touch(await session.flush())

    finding = only_finding(scope)
    assert finding.kind == "repeated_write"
    assert finding.count == 5
    assert finding.suggestion is not None
    assert "insert(Tag)" in finding.suggestion
    assert finding.location == site.location


def test_add_all_and_one_flush_is_not_a_repeated_write(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    with sync_db.session() as session, profiler.scope("add_all") as scope:
        session.add_all([Tag(name=f"new tag {i}") for i in range(10)])
        session.flush()

    assert findings_of(scope, "repeated_write") == []
    assert scope.findings == []


async def test_add_all_and_one_awaited_flush_is_not_a_repeated_write(async_db: AsyncDb) -> None:
    profiler = async_db.profiler()
    async with async_db.session() as session, profiler.scope("add_all") as scope:
        session.add_all([Tag(name=f"new tag {i}") for i in range(10)])
        await session.flush()

    assert findings_of(scope, "repeated_write") == []
    assert scope.findings == []


# -- slow queries -------------------------------------------------------------------------------


def test_a_statement_over_the_slow_query_threshold_is_a_slow_query(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler(slow_query_threshold=0.05)
    site = Site()
    with sync_db.session() as session, profiler.scope("slow") as scope:
        site.touch(session.execute(text(sync_db.backend.slow_statement)).all())

    finding = only_finding(scope)
    assert finding.kind == "slow_query"
    assert finding.count == 1
    assert finding.duration >= 0.05
    assert finding.location == site.location


async def test_an_awaited_statement_over_the_slow_query_threshold_is_a_slow_query(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler(slow_query_threshold=0.05)
    site = Site()
    async with async_db.session() as session, profiler.scope("slow") as scope:
        site.touch(await session.execute(text(async_db.backend.slow_statement))).all()

    finding = only_finding(scope)
    assert finding.kind == "slow_query"
    assert finding.count == 1
    assert finding.duration >= 0.05
    assert finding.location == site.location


# -- long transactions --------------------------------------------------------------------------


def test_a_committed_transaction_open_over_the_threshold_is_a_long_transaction(
    sync_db: SyncDb,
) -> None:
    profiler = sync_db.profiler(long_transaction_threshold=0.2)
    site = Site()
    with sync_db.session() as session, profiler.scope("long commit") as scope:
        site.touch(session.scalars(select(Author.id)).all())
        time.sleep(0.3)
        session.scalars(select(Book.id)).all()
        session.commit()

    # Only the transaction is asserted: a loaded machine may add a slow query.
    [finding] = findings_of(scope, "long_transaction")
    assert finding.kind == "long_transaction"
    assert finding.count == 2
    assert finding.duration >= 0.3
    assert finding.location == site.location
    [transaction] = scope.transactions
    assert transaction.outcome == "commit"
    assert transaction.end_seen
    assert transaction.idle >= 0.25


async def test_a_committed_async_transaction_open_over_the_threshold_is_a_long_transaction(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler(long_transaction_threshold=0.2)
    site = Site()
    async with async_db.session() as session, profiler.scope("long commit") as scope:
        site.touch(await session.scalars(select(Author.id))).all()
        await asyncio.sleep(0.3)
        (await session.scalars(select(Book.id))).all()
        await session.commit()

    # Only the transaction is asserted: a loaded machine may add a slow query.
    [finding] = findings_of(scope, "long_transaction")
    assert finding.kind == "long_transaction"
    assert finding.count == 2
    assert finding.duration >= 0.3
    assert finding.location == site.location
    [transaction] = scope.transactions
    assert transaction.outcome == "commit"
    assert transaction.end_seen
    assert transaction.idle >= 0.25


def test_a_rolled_back_transaction_open_over_the_threshold_is_a_long_transaction(
    sync_db: SyncDb,
) -> None:
    profiler = sync_db.profiler(long_transaction_threshold=0.2)
    site = Site()
    with sync_db.session() as session, profiler.scope("long rollback") as scope:
        site.touch(session.scalars(select(Author.id)).all())
        time.sleep(0.3)
        session.scalars(select(Book.id)).all()
        session.rollback()

    # Only the transaction is asserted: a loaded machine may add a slow query.
    [finding] = findings_of(scope, "long_transaction")
    assert finding.kind == "long_transaction"
    assert finding.location == site.location
    [transaction] = scope.transactions
    assert transaction.outcome == "rollback"
    assert transaction.end_seen
    assert transaction.idle >= 0.25


async def test_a_rolled_back_async_transaction_open_over_the_threshold_is_a_long_transaction(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler(long_transaction_threshold=0.2)
    site = Site()
    async with async_db.session() as session, profiler.scope("long rollback") as scope:
        site.touch(await session.scalars(select(Author.id))).all()
        await asyncio.sleep(0.3)
        (await session.scalars(select(Book.id))).all()
        await session.rollback()

    # Only the transaction is asserted: a loaded machine may add a slow query.
    [finding] = findings_of(scope, "long_transaction")
    assert finding.kind == "long_transaction"
    assert finding.location == site.location
    [transaction] = scope.transactions
    assert transaction.outcome == "rollback"
    assert transaction.end_seen
    assert transaction.idle >= 0.25


# -- failed statements --------------------------------------------------------------------------


def test_a_failed_statement_is_recorded_and_its_exception_reaches_the_caller_unchanged(
    sync_db: SyncDb,
) -> None:
    profiler = sync_db.profiler()
    site = Site()
    with sync_db.session() as session:
        with pytest.raises(DBAPIError) as unprofiled:  # outside any scope: as SQLAlchemy raises it
            session.execute(text(MISSING_TABLE_SQL))
        session.rollback()
        with profiler.scope("failure") as scope, pytest.raises(DBAPIError) as profiled:
            session.execute(text(MISSING_TABLE_SQL))
        site.raised(profiled)

    assert type(profiled.value) is type(unprofiled.value)
    assert type(profiled.value.orig) is type(unprofiled.value.orig)
    assert str(profiled.value.orig) == str(unprofiled.value.orig)
    assert scope.query_count == 1
    [query] = scope.queries
    assert query.error == type(profiled.value.orig).__name__
    assert query.location == site.location


async def test_a_failed_awaited_statement_is_recorded_and_its_exception_reaches_the_caller(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler()
    site = Site()
    async with async_db.session() as session:
        with pytest.raises(DBAPIError) as unprofiled:  # outside any scope: as SQLAlchemy raises it
            await session.execute(text(MISSING_TABLE_SQL))
        await session.rollback()
        async with profiler.scope("failure") as scope:
            with pytest.raises(DBAPIError) as profiled:
                await session.execute(text(MISSING_TABLE_SQL))
            site.raised(profiled)

    assert type(profiled.value) is type(unprofiled.value)
    assert type(profiled.value.orig) is type(unprofiled.value.orig)
    assert str(profiled.value.orig) == str(unprofiled.value.orig)
    assert scope.query_count == 1
    [query] = scope.queries
    assert query.error == type(profiled.value.orig).__name__
    assert query.location == site.location


# -- call sites: each loop is its own finding ---------------------------------------------------


def test_two_loops_over_the_same_relationship_are_two_findings_with_their_own_counts(
    sync_db: SyncDb,
) -> None:
    """24 lazy loads per loop: more than the call sites queryprof samples per shape (16)."""
    profiler = sync_db.profiler()
    catalogue, index = Site(), Site()
    with (
        sync_db.session() as first,
        sync_db.session() as second,
        profiler.scope("two loops") as scope,
    ):
        first_loads, second_loads = LazyLoads(first), LazyLoads(second)
        for book in first.scalars(select(Book).order_by(Book.id)).all():
            catalogue.touch(book.tags)
        for book in second.scalars(select(Book).order_by(Book.id)).all():
            index.touch(book.tags)

    assert first_loads.count == second_loads.count == BOOKS
    assert sorted((f.location, f.count) for f in findings_of(scope, "n_plus_one")) == sorted(
        [(catalogue.location, BOOKS), (index.location, BOOKS)]
    )


async def test_gathered_coroutines_each_get_their_own_n_plus_one_at_their_own_line(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler()
    pages, sidebar = Site(), Site()

    async def render_pages() -> None:
        async with async_db.session() as session:
            for author in (await session.scalars(select(Author).order_by(Author.id))).all():
                pages.touch(await author.awaitable_attrs.books)

    async def render_sidebar() -> None:
        async with async_db.session() as session:
            for author in (await session.scalars(select(Author).order_by(Author.id))).all():
                sidebar.touch(await author.awaitable_attrs.books)

    async with profiler.scope("gather") as scope:
        await asyncio.gather(render_pages(), render_sidebar())

    findings = findings_of(scope, "n_plus_one")
    assert sorted((f.location, f.count, f.relationship) for f in findings) == sorted(
        [(pages.location, AUTHORS, "Author.books"), (sidebar.location, AUTHORS, "Author.books")]
    )


async def test_gathered_long_loops_keep_their_own_counts(async_db: AsyncDb) -> None:
    """24 lazy loads per coroutine: more than the call sites queryprof samples per shape (16)."""
    profiler = async_db.profiler()
    catalogue, index = Site(), Site()

    async def render_catalogue() -> None:
        async with async_db.session() as session:
            for book in (await session.scalars(select(Book).order_by(Book.id))).all():
                catalogue.touch(await book.awaitable_attrs.tags)

    async def render_index() -> None:
        async with async_db.session() as session:
            for book in (await session.scalars(select(Book).order_by(Book.id))).all():
                index.touch(await book.awaitable_attrs.tags)

    async with profiler.scope("gather") as scope:
        await asyncio.gather(render_catalogue(), render_index())

    assert sorted((f.location, f.count) for f in findings_of(scope, "n_plus_one")) == sorted(
        [(catalogue.location, BOOKS), (index.location, BOOKS)]
    )


# -- silencing ----------------------------------------------------------------------------------


def test_lazy_loads_inside_allow_make_no_finding_but_still_count(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler()
    with sync_db.session() as session, profiler.scope("allowed") as scope:
        authors = session.scalars(select(Author).order_by(Author.id)).all()
        with queryprof.allow("the export walks every author on purpose"):
            for author in authors:
                assert len(author.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == 1 + AUTHORS


async def test_awaited_lazy_loads_inside_allow_make_no_finding_but_still_count(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler()
    async with async_db.session() as session, profiler.scope("allowed") as scope:
        authors = (await session.scalars(select(Author).order_by(Author.id))).all()
        with queryprof.allow("the export walks every author on purpose"):
            for author in authors:
                assert len(await author.awaitable_attrs.books) == BOOKS_PER_AUTHOR

    assert scope.findings == []
    assert scope.query_count == 1 + AUTHORS


def test_allow_relationships_silences_that_relationship_only(sync_db: SyncDb) -> None:
    profiler = sync_db.profiler(allow_relationships=["Author.books"])
    site = Site()
    with sync_db.session() as session, profiler.scope("allow list") as scope:
        for author in session.scalars(select(Author).order_by(Author.id)).all():
            assert len(author.books) == BOOKS_PER_AUTHOR
            site.touch(author.profile)

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship == "Author.profile"
    assert finding.location == site.location


async def test_allow_relationships_silences_that_awaited_relationship_only(
    async_db: AsyncDb,
) -> None:
    profiler = async_db.profiler(allow_relationships=["Author.books"])
    site = Site()
    async with async_db.session() as session, profiler.scope("allow list") as scope:
        for author in (await session.scalars(select(Author).order_by(Author.id))).all():
            assert len(await author.awaitable_attrs.books) == BOOKS_PER_AUTHOR
            site.touch(await author.awaitable_attrs.profile)

    finding = only_finding(scope)
    assert finding.kind == "n_plus_one"
    assert finding.relationship == "Author.profile"
    assert finding.location == site.location
