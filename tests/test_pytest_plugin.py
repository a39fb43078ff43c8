"""The pytest plugin, through pytester: inner test runs against the example blog, for real.

Each test writes an inner project (its fixtures are tests/plugin_blog.py: the blog on a SQLite
file, or on a PostgreSQL database of its own), runs pytest on it with the plugin installed
through its entry point, and checks the outcome and the output a user would see. The inner
projects run with ``--strict-markers`` and warnings as errors.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import secrets
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # noqa: F401 - see below
import examples.blog.app  # noqa: F401
import greenlet  # noqa: F401
import hypothesis  # noqa: F401 - its pytest plugin imports it at the end of every run
import psycopg  # noqa: F401
import pytest
import sqlalchemy.dialects.postgresql.asyncpg
import sqlalchemy.dialects.postgresql.psycopg
import sqlalchemy.dialects.sqlite.aiosqlite  # noqa: F401
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

import queryprof
from conftest import PG_SYNC_URL, PG_URL, require_server
from queryprof import Scope
from queryprof.testing import assert_constant_queries

# pytester's in-process runs forget the modules each run imported. Importing a C extension
# (asyncpg, psycopg, greenlet) a second time can crash the process, and importing everything
# again costs a second a run: the outer session imports them once, above and here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    import fastapi.testclient  # noqa: F401
for _module in pkgutil.walk_packages(queryprof.__path__, "queryprof."):
    with contextlib.suppress(ImportError):  # an optional extra that is not installed
        importlib.import_module(_module.name)

REPO = Path(__file__).resolve().parents[1]
ROUTES = REPO / "examples" / "blog" / "routes.py"


def _line_of(marker: str) -> int:
    lines = ROUTES.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line)


# Call sites, as fnmatch patterns: the path is relative to the directory the process started in.
LAZY_LOAD = f"*examples/blog/routes.py:{_line_of('awaitable_attrs.posts')} in list_authors"
AUTHORS_QUERY = (
    f"*examples/blog/routes.py:{_line_of('select(Author).order_by(Author.id))')} in list_authors"
)
# Statement shapes of the blog as messages print them, as fnmatch patterns: SQLAlchemy 2.0
# labels the first column (``blog_posts.id AS blog_posts_id, ...``), so a long one may be cut
# short, and asyncpg casts its parameters (``?::INTEGER``).
AUTHORS_SHAPE = "SELECT blog_authors.id*, ... FROM blog_authors ORDER BY blog_authors.id"


@dataclass(frozen=True)
class Shapes:
    parameter: str

    @property
    def posts(self) -> str:  # the lazy load of one author's posts (GET /authors)
        return (
            f"SELECT blog_posts.id*, ... FROM blog_posts WHERE {self.parameter} = "
            "blog_posts.author_id *"
        )

    @property
    def eager_posts(self) -> str:  # every author's posts at once (GET /authors/eager)
        return (
            "SELECT blog_posts.author_id*, ... FROM blog_posts WHERE blog_posts.author_id "
            f"IN ({self.parameter})*"
        )

    @property
    def author(self) -> str:  # GET /authors/{id}
        return (
            "SELECT blog_authors.id*, ... FROM blog_authors WHERE blog_authors.id = "
            f"{self.parameter}"
        )


SHAPES = {"sqlite": Shapes("?"), "postgresql": Shapes("?::INTEGER")}
POSTS_SHAPE = SHAPES["sqlite"].posts

INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings =
    error
    ignore:Using `httpx` with `starlette.testclient` is deprecated
"""

BUDGETS = """
import pytest

@pytest.mark.query_budget(2)
def test_eager(client):
    assert client.get("/authors/eager").status_code == 200

@pytest.mark.query_budget(5)
def test_authors(client):
    assert client.get("/authors").status_code == 200
"""


@pytest.fixture(scope="session")
def plugin_pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own: inner runs drop and seed its tables."""
    require_server(PG_URL)
    name = f"{PLUGIN_DATABASES}{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(PG_SYNC_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            _drop_orphans(conn)
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


PLUGIN_DATABASES = "queryprof_plugin_"  # + the pid of the session that made it + a suffix


def _drop_orphans(conn: Connection) -> None:
    """Drop the databases of sessions that died before they could (a crash, a kill -9)."""
    query = text("SELECT datname FROM pg_database WHERE datname LIKE :prefix")
    for (name,) in conn.execute(query, {"prefix": PLUGIN_DATABASES + "%"}).all():
        pid = name[len(PLUGIN_DATABASES) :].split("_")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except PermissionError:
            pass  # alive, someone else's


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An inner project on the blog, with a SQLite file per test."""
    # In a subprocess (xdist), the blog and tests/plugin_blog.py are found through PYTHONPATH.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "tests")]))
    monkeypatch.setenv("QUERYPROF_PLUGIN_DB", "sqlite")
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makeini(INI)
    pytester.makeconftest('pytest_plugins = ["plugin_blog"]')
    return pytester


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def blog_project(
    request: pytest.FixtureRequest,
    database: str,
    project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> pytest.Pytester:
    """The same inner project, on a SQLite file and on PostgreSQL."""
    if database == "postgresql":
        monkeypatch.setenv("QUERYPROF_PLUGIN_DB", request.getfixturevalue("plugin_pg_url"))
    return project


@pytest.fixture
def shapes(database: str) -> Shapes:
    return SHAPES[database]


def lines_with(source: str, text: str) -> list[int]:
    """Where ``text`` is in the file pytester writes from ``source`` (dedented, stripped)."""
    lines = textwrap.dedent(source).strip().splitlines()
    return [number for number, line in enumerate(lines, 1) if text in line]


def assert_lines(lines: list[str], *patterns: str) -> None:
    """``lines`` are exactly these, each matching its fnmatch pattern."""
    assert len(lines) == len(patterns), lines
    pytest.LineMatcher(lines).fnmatch_lines(list(patterns), consecutive=True)


def has_summary(result: pytest.RunResult) -> bool:
    """Whether the run ended with queryprof's section of the terminal summary."""
    return any(line.strip("= ") == "queryprof" for line in result.outlines)


def failure_of(result: pytest.RunResult, test: str) -> list[str]:
    """The lines of one test's failure section, between its header and the next section."""
    lines = [line for line in result.outlines if not line.startswith("[gw")]  # xdist's
    start = next(i for i, line in enumerate(lines) if line.strip("_ ") == test)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("___", "===", "---"))),
        len(lines),
    )
    return lines[start + 1 : end]


# -- budgets: the marker ----------------------------------------------------------------------


def test_a_marker_budget_passes_under_it_and_fails_over_it_with_the_diagnosis(
    blog_project: pytest.Pytester,
    shapes: Shapes,
) -> None:
    blog_project.makepyfile(test_blog=BUDGETS)
    result = blog_project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    assert_lines(
        failure_of(result, "test_authors"),
        "test_authors ran 21 statements, budget 5 (16 over)",
        f"  20 x {shapes.posts}   from {LAZY_LOAD}",
        "       N+1: lazy load of Author.posts -> selectinload(Author.posts)",
        f"   1 x {AUTHORS_SHAPE}   from {AUTHORS_QUERY}",
    )
    result.stdout.fnmatch_lines(
        ["FAILED test_blog.py::test_authors - Failed: test_authors ran 21*"]
    )


def test_a_marker_budget_counts_async_tests_on_pytest_asyncio_and_anyio(
    blog_project: pytest.Pytester,
) -> None:
    blog_project.makepyfile(
        test_async="""
        import pytest

        @pytest.mark.asyncio
        @pytest.mark.query_budget(2)
        async def test_asyncio_eager(asyncio_client):
            await asyncio_client.get("/authors/eager")

        @pytest.mark.asyncio
        @pytest.mark.query_budget(5)
        async def test_asyncio_authors(asyncio_client):
            await asyncio_client.get("/authors")

        @pytest.mark.anyio
        @pytest.mark.query_budget(2)
        async def test_anyio_eager(anyio_client):
            await anyio_client.get("/authors/eager")

        @pytest.mark.anyio
        @pytest.mark.query_budget(5)
        async def test_anyio_authors(anyio_client):
            await anyio_client.get("/authors")
        """
    )
    result = blog_project.runpytest()
    result.assert_outcomes(passed=2, failed=2)
    for test in ("test_asyncio_authors", "test_anyio_authors"):
        failure = failure_of(result, test)
        assert failure[0] == f"{test} ran 21 statements, budget 5 (16 over)"
        assert failure[2] == "       N+1: lazy load of Author.posts -> selectinload(Author.posts)"


def test_an_exact_budget_fails_on_fewer_statements_too(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_exact="""
        import pytest

        @pytest.mark.query_budget(2, exact=True)
        def test_two(client):
            client.get("/authors/eager")

        @pytest.mark.query_budget(3, exact=True)
        def test_three(client):
            client.get("/authors/eager")
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    assert failure_of(result, "test_three")[0] == (
        "test_three ran 2 statements, expected exactly 3 (1 fewer)"
    )


def test_statements_of_fixture_setup_do_not_count_unless_the_test_asks(
    project: pytest.Pytester,
) -> None:
    # The client fixture creates the tables and seeds 20 authors in the app's lifespan.
    project.makepyfile(
        test_setup="""
        import pytest

        @pytest.mark.query_budget(2)
        def test_body_only(client):
            client.get("/authors/eager")

        @pytest.mark.query_budget(2, include_setup=True)
        def test_with_setup(client):
            client.get("/authors/eager")
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    failure = failure_of(result, "test_with_setup")
    assert failure[0].startswith("test_with_setup ran ")
    assert int(failure[0].split()[2]) > 10
    assert any("INSERT INTO blog_authors" in line for line in failure)


def test_the_include_setup_ini_option_counts_setup_for_every_test(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_blog=BUDGETS)
    result = project.runpytest("-o", "queryprof_include_setup=true")
    result.assert_outcomes(failed=2)


def test_the_budget_option_applies_to_tests_without_a_marker(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_default="""
        import pytest

        def test_eager(client):
            client.get("/authors/eager")

        def test_authors(client):
            client.get("/authors")

        @pytest.mark.query_budget(25)
        def test_authors_with_its_own_budget(client):
            client.get("/authors")
        """
    )
    result = project.runpytest("--queryprof-budget=2")
    result.assert_outcomes(passed=2, failed=1)
    assert (
        failure_of(result, "test_authors")[0]
        == "test_authors ran 21 statements, budget 2 (19 over)"
    )
    project.runpytest("-o", "queryprof_budget=2").assert_outcomes(passed=2, failed=1)
    project.runpytest().assert_outcomes(passed=3)


def test_the_closest_marker_wins(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_closest="""
        import pytest

        pytestmark = pytest.mark.query_budget(1)

        def test_module_budget(client):
            client.get("/authors/eager")

        class TestAuthors:
            pytestmark = pytest.mark.query_budget(25)

            def test_class_budget(self, client):
                client.get("/authors")

            @pytest.mark.query_budget(2)
            def test_own_budget(self, client):
                client.get("/authors")
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    assert failure_of(result, "test_module_budget")[0].endswith("budget 1 (1 over)")
    assert failure_of(result, "TestAuthors.test_own_budget")[0].endswith("budget 2 (19 over)")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ('"five"', "n must be a whole number of statements, not 'five'"),
        ("-1", "n must be 0 or more, not -1"),
        ("True", "n must be a whole number of statements, not True"),
        ("5, exat=True", "got an unexpected keyword argument 'exat'"),
        ("5, 6", "takes from 0 to 1 positional arguments but 2 were given"),
        ("exact=True", "exact=True needs a number of statements n"),
        ('n_plus_one="loud"', "n_plus_one must be 'fail', 'warn' or 'off', not 'loud'"),
        ('5, include_setup="yes"', "include_setup must be True or False, not 'yes'"),
    ],
)
def test_a_marker_with_bad_arguments_is_an_error_that_says_what_is_wrong(
    project: pytest.Pytester, arguments: str, error: str
) -> None:
    project.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.query_budget({arguments})
        def test_it():
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    shown = arguments.replace('"', "'")
    result.stdout.fnmatch_lines(
        [
            f"invalid marker @pytest.mark.query_budget({shown}): *; usage: "
            "query_budget(n=None, *, exact=False, n_plus_one=None, include_setup=None)"
        ]
    )
    assert error in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_the_marker_and_options_are_registered(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.query_budget(n=None, *, exact=False, n_plus_one=None, include_setup=None):*"]
    )
    help_text = project.runpytest("--help").stdout.str()
    for option in (
        "--queryprof-budget=N",
        "--queryprof-n-plus-one={fail,warn,off}",
        "--queryprof-n-plus-one-threshold=N",
        "--queryprof-report",
        "--queryprof-baseline=PATH",
        "--queryprof-baseline-update",
        "queryprof_include_setup",
    ):
        assert option in help_text


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--queryprof-budget=lots"], "queryprof_budget must be a whole number"),
        (["-o", "queryprof_budget=-3"], "queryprof_budget must be 0 or more, not -3"),
        (["-o", "queryprof_n_plus_one=loud"], "queryprof_n_plus_one must be 'fail', 'warn' or"),
        (["--queryprof-n-plus-one-threshold=1"], "must be at least 2, not 1"),
        (["--queryprof-baseline-update"], "--queryprof-baseline-update needs --queryprof-baseline"),
    ],
)
def test_a_bad_option_is_a_usage_error(
    project: pytest.Pytester, options: list[str], error: str
) -> None:
    project.makepyfile(test_blog=BUDGETS)
    result = project.runpytest(*options)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert error in result.stderr.str()


# -- the fixtures -------------------------------------------------------------------------------


def test_the_query_budget_fixture_checks_a_block(blog_project: pytest.Pytester) -> None:
    blog_project.makepyfile(
        test_block="""
        def test_block_within(client, query_budget):
            with query_budget(2) as scope:
                client.get("/authors/eager")
            assert scope.query_count == 2
            client.get("/authors")  # outside the block: no budget

        def test_block_over(client, query_budget):
            client.get("/authors/eager")
            with query_budget(3):
                client.get("/authors")
            raise AssertionError("never reached")
        """
    )
    result = blog_project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    failure = failure_of(result, "test_block_over")
    assert failure[0] == (
        "test_block_over ran 21 statements, budget 3 (18 over) in the block at test_block.py:9"
    )
    assert failure[2] == "       N+1: lazy load of Author.posts -> selectinload(Author.posts)"
    assert "never reached" not in result.stdout.str()


ASYNC_BLOCKS = """
import pytest

@pytest.mark.asyncio
async def test_asyncio(asyncio_client, query_budget):
    async with query_budget(2, exact=True):
        await asyncio_client.get("/authors/eager")
    async with query_budget(5):
        await asyncio_client.get("/authors")

@pytest.mark.anyio
async def test_anyio(anyio_client, query_budget):
    async with query_budget(2, exact=True):
        await anyio_client.get("/authors/eager")
    async with query_budget(5):
        await anyio_client.get("/authors")
"""


def test_the_query_budget_fixture_works_with_async_with(blog_project: pytest.Pytester) -> None:
    blog_project.makepyfile(test_async_block=ASYNC_BLOCKS)
    result = blog_project.runpytest()
    result.assert_outcomes(failed=2)
    blocks = lines_with(ASYNC_BLOCKS, "async with query_budget(5)")
    for test, line in zip(("test_asyncio", "test_anyio"), blocks, strict=True):
        assert failure_of(result, test)[0] == (
            f"{test} ran 21 statements, budget 5 (16 over) in the block at "
            f"test_async_block.py:{line}"
        )


def test_queryprof_scope_is_the_test_scope_and_counts_once_with_the_apps_own_profiler(
    blog_project: pytest.Pytester,
) -> None:
    blog_project.makepyfile(
        test_scope="""
        import pytest
        from fastapi.testclient import TestClient
        from examples.blog.app import create_app
        from queryprof import Profiler

        def test_counts_the_app_thread(client, queryprof_scope):
            client.get("/authors")
            assert queryprof_scope.query_count == 21
            lazy = [q for q in queryprof_scope.queries if q.relationship == "Author.posts"]
            assert len(lazy) == 20

        def test_app_with_its_own_profiler_and_middleware(blog_url, queryprof_scope):
            profiler = Profiler(log_findings=False)
            closed = []
            profiler.on_scope_close(closed.append)
            with TestClient(create_app(blog_url, profiler=profiler)) as client:
                before = queryprof_scope.query_count
                client.get("/authors")
                assert queryprof_scope.query_count - before == 21
            assert [s.query_count for s in closed if s.kind == "http"] == [21]
            profiler.uninstrument()

        @pytest.mark.asyncio
        async def test_async(asyncio_client, queryprof_scope):
            await asyncio_client.get("/authors")
            await asyncio_client.get("/authors/eager")
            assert queryprof_scope.query_count == 23
        """
    )
    blog_project.runpytest().assert_outcomes(passed=3)


def test_queryprof_scope_asked_for_inside_the_test_counts_from_then_on(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(
        test_late="""
        import os

        def test_late(client, request):
            client.get("/authors/eager")
            scope = request.getfixturevalue("queryprof_scope")
            client.get("/authors")
            assert scope.query_count == int(os.environ["EXPECTED"])
        """
    )
    monkeypatch.setenv("EXPECTED", "21")  # not watched before: the scope opens when asked for
    project.runpytest("--queryprof-n-plus-one=off").assert_outcomes(passed=1)
    monkeypatch.setenv("EXPECTED", "23")  # watched for N+1s: the scope of the whole body
    project.runpytest().assert_outcomes(passed=1)


def test_a_failing_test_that_asked_for_its_scope_shows_what_it_ran(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_fails="""
        def test_wrong_count(client, queryprof_scope):
            client.get("/authors/eager")
            assert queryprof_scope.query_count == 1
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- Captured queryprof call -*",
            "test_wrong_count ran 2 statements",
            f"  1 x {AUTHORS_SHAPE}   from *routes.py:* in list_authors_eager",
        ]
    )


# -- N+1 ----------------------------------------------------------------------------------------

N_PLUS_ONE = """
def test_authors(client):
    client.get("/authors")

def test_eager(client):
    client.get("/authors/eager")
"""


def test_an_n_plus_one_fails_the_test_in_fail_mode(
    blog_project: pytest.Pytester, shapes: Shapes
) -> None:
    blog_project.makepyfile(test_n1=N_PLUS_ONE)
    result = blog_project.runpytest("--queryprof-n-plus-one=fail")
    result.assert_outcomes(passed=1, failed=1)
    failure = failure_of(result, "test_authors")
    assert_lines(
        failure[:3],
        "test_authors ran 1 N+1 pattern (--queryprof-n-plus-one=fail)",
        f"  20 x {shapes.posts}   from {LAZY_LOAD}",
        "       N+1: lazy load of Author.posts -> selectinload(Author.posts)",
    )


def test_an_n_plus_one_is_listed_at_the_end_in_warn_mode_without_a_python_warning(
    blog_project: pytest.Pytester,
    shapes: Shapes,
) -> None:
    blog_project.makepyfile(test_n1=N_PLUS_ONE)
    for options in ([], ["--queryprof-n-plus-one=warn"]):
        result = blog_project.runpytest(*options)
        result.assert_outcomes(passed=2)  # warnings are errors in the inner project
        result.stdout.fnmatch_lines(
            [
                "*= queryprof =*",
                "N+1 in 1 test:",
                "  test_n1.py::test_authors",
                f"    N+1: 20 x {shapes.posts} (* ms) from {LAZY_LOAD}; lazy load of "
                "Author.posts; fix: selectinload(Author.posts)",
                "(--queryprof-n-plus-one=fail makes them fail; =off hides this list)",
            ]
        )
        assert "warnings summary" not in result.stdout.str()


def test_an_n_plus_one_does_nothing_in_off_mode(project: pytest.Pytester) -> None:
    project.makepyfile(test_n1=N_PLUS_ONE)
    result = project.runpytest("--queryprof-n-plus-one=off")
    result.assert_outcomes(passed=2)
    assert not has_summary(result)


def test_the_marker_sets_the_n_plus_one_mode_of_one_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_modes="""
        import pytest

        @pytest.mark.query_budget(n_plus_one="off")
        def test_accepted(client):
            client.get("/authors")

        @pytest.mark.query_budget(n_plus_one="fail")
        def test_strict(client):
            client.get("/authors")
        """
    )
    result = project.runpytest("--queryprof-n-plus-one=fail")
    result.assert_outcomes(passed=1, failed=1)
    assert failure_of(result, "test_strict")[0] == (
        "test_strict ran 1 N+1 pattern (query_budget(n_plus_one='fail'))"
    )
    result = project.runpytest("--queryprof-n-plus-one=off")
    result.assert_outcomes(passed=1, failed=1)


def test_the_n_plus_one_threshold_is_3_in_tests_and_can_be_changed(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_two_authors="""
        import pytest

        @pytest.fixture
        def seed_authors():
            return 2

        def test_two(client):
            client.get("/authors")
        """,
        test_three_authors="""
        import pytest

        @pytest.fixture
        def seed_authors():
            return 3

        def test_three(client):
            client.get("/authors")
        """,
    )
    result = project.runpytest("--queryprof-n-plus-one=fail")
    result.assert_outcomes(passed=1, failed=1)
    assert_lines(failure_of(result, "test_three")[1:2], f"  3 x {POSTS_SHAPE}   from {LAZY_LOAD}")
    project.runpytest(
        "--queryprof-n-plus-one=fail", "--queryprof-n-plus-one-threshold=4"
    ).assert_outcomes(passed=2)
    project.runpytest(
        "--queryprof-n-plus-one=fail", "-o", "queryprof_n_plus_one_threshold=2"
    ).assert_outcomes(failed=2)


# -- what a test that asks for nothing costs ------------------------------------------------------


def test_a_test_that_asks_for_nothing_runs_without_listeners(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_listeners="""
        import pytest
        from sqlalchemy import Engine, event
        from queryprof import capture

        def listening():
            return event.contains(Engine, "do_execute", capture._on_do_execute)

        def test_unwatched():
            assert not listening()

        @pytest.mark.query_budget(5)
        def test_watched():
            assert listening()

        def test_unwatched_again():
            assert not listening()
        """
    )
    project.runpytest("--queryprof-n-plus-one=off").assert_outcomes(passed=3)
    # By default every test is watched for N+1s.
    project.runpytest().assert_outcomes(passed=1, failed=2)


def test_p_no_queryprof_turns_the_plugin_off(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_off="""
        import pytest

        @pytest.mark.query_budget(1)
        def test_authors(client):
            client.get("/authors")

        def test_scope(queryprof_scope):
            pass
        """
    )
    # In a process of its own: in this one, pytest.mark remembers markers registered before.
    result = project.runpytest_subprocess("-p", "no:queryprof")
    result.stdout.fnmatch_lines(["*'query_budget' not found in `markers` configuration option*"])
    result = project.runpytest_subprocess(
        "-p", "no:queryprof", "-o", "markers=query_budget: registered by hand"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'queryprof_scope' not found*"])


# -- the report ---------------------------------------------------------------------------------


def test_the_report_lists_the_top_tests_and_every_n_plus_one(
    blog_project: pytest.Pytester,
    shapes: Shapes,
) -> None:
    blog_project.makepyfile(
        test_report="""
        import pytest

        def test_authors(client):
            client.get("/authors")

        def test_eager(client):
            client.get("/authors/eager")

        def test_comments(client):
            client.get("/posts/1/comments-loop")

        @pytest.mark.parametrize("author", range(1, 11))
        def test_author(client, author):
            client.get(f"/authors/{author}")
        """
    )
    result = blog_project.runpytest("--queryprof-report", "--queryprof-n-plus-one=off")
    result.assert_outcomes(passed=13)
    result.stdout.fnmatch_lines(
        [
            "*= queryprof =*",
            "Most statements: 10 of 13 tests (36 statements in all)",
            "  21  test_report.py::test_authors",
            "   3  test_report.py::test_comments",
            "   2  test_report.py::test_eager",
            *(f"   1  test_report.py::test_author[[]{i}[]]" for i in range(1, 8)),
            "N+1 in 1 test:",
            "  test_report.py::test_authors",
            f"    N+1: 20 x {shapes.posts} * from {LAZY_LOAD}; lazy load of Author.posts; *",
        ]
    )
    assert "test_author[8]" not in result.stdout.str()
    assert "makes them fail" not in result.stdout.str()


def test_the_report_says_so_when_no_test_ran_a_statement(project: pytest.Pytester) -> None:
    project.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = project.runpytest("--queryprof-report")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= queryprof =*", "No SQL statement in 1 test"])


# -- this suite's own tests are watched too -------------------------------------------------------


@pytest.fixture
def two_rows(tmp_path: Path) -> Iterator[Engine]:
    """Two statements while fixtures are set up."""
    engine = create_engine(f"sqlite:///{tmp_path}/rows.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE rows (n INTEGER)"))
        conn.execute(text("INSERT INTO rows VALUES (1), (2)"))
    yield engine
    engine.dispose()


@pytest.mark.query_budget(3, include_setup=True)
def test_a_test_of_this_suite_can_count_its_fixtures(
    two_rows: Engine, queryprof_scope: Scope
) -> None:
    # The scope opened before every fixture, tests/conftest.py's scope check included.
    assert queryprof_scope.query_count == 2
    with two_rows.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rows")).scalar() == 2
    assert queryprof_scope.query_count == 3


# -- the scaling check --------------------------------------------------------------------------


def test_the_scaling_check_passes_on_the_fixed_endpoint_and_fails_on_the_n_plus_one(
    blog_project: pytest.Pytester,
    shapes: Shapes,
) -> None:
    blog_project.makepyfile(
        test_scaling="""
        from plugin_blog import reseed
        from queryprof.testing import assert_constant_queries

        def test_eager(client, blog_url):
            counts = assert_constant_queries(
                lambda n: reseed(blog_url, n), lambda: client.get("/authors/eager")
            )
            assert counts == {2: 2, 5: 2}

        def test_authors(client, blog_url):
            assert_constant_queries(
                lambda n: reseed(blog_url, n), lambda: client.get("/authors"), scales=(2, 3, 5)
            )
        """
    )
    result = blog_project.runpytest("--queryprof-n-plus-one=off")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: the statement count grows with the data: 3 statements at "
            "scale 2, 4 statements at scale 3, 6 statements at scale 5",
            f"E *   2 -> 3 -> 5 x {shapes.posts}   from {LAZY_LOAD}",
            "E *                 N+1: lazy load of Author.posts -> selectinload(Author.posts)",
        ]
    )
    result.stdout.no_fnmatch_line(f"*{AUTHORS_SHAPE}*")  # it did not grow


def test_the_scaling_check_takes_async_functions(
    blog_project: pytest.Pytester, shapes: Shapes
) -> None:
    blog_project.makepyfile(
        test_scaling_async="""
        import functools
        import pytest
        from plugin_blog import reseed_async
        from queryprof.testing import assert_constant_queries

        @pytest.mark.asyncio
        async def test_eager(app, asyncio_client):
            async def list_authors():
                await asyncio_client.get("/authors/eager")

            populate = functools.partial(reseed_async, app)
            assert await assert_constant_queries(populate, list_authors) == {2: 2, 5: 2}

        @pytest.mark.anyio
        async def test_authors(app, anyio_client):
            async def populate(n):
                await reseed_async(app, n)

            await assert_constant_queries(populate, lambda: anyio_client.get("/authors"))

        @pytest.mark.asyncio
        async def test_awaitable_from_a_sync_function(app, asyncio_client):
            with pytest.raises(TypeError, match="returned an awaitable"):
                assert_constant_queries(lambda n: None, lambda: asyncio_client.get("/authors"))
        """
    )
    result = blog_project.runpytest("--queryprof-n-plus-one=off")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: the statement count grows with the data: 3 statements at "
            "scale 2, 6 statements at scale 5",
            f"E *   2 -> 5 x {shapes.posts}   from {LAZY_LOAD}",
        ]
    )


@pytest.mark.parametrize("scales", [(5,), (5, 2), (2, 2), (2, "5"), (-1, 2), (True, 2)], ids=str)
def test_the_scaling_check_needs_two_or_more_growing_scales(scales: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match="scales must"):
        assert_constant_queries(lambda n: None, lambda: None, scales=scales)  # type: ignore[arg-type]


# -- the baseline -------------------------------------------------------------------------------

BASELINE_TESTS = """
import os

def test_eager(client):
    for _ in range(int(os.environ.get("EAGER_REQUESTS", "1"))):
        client.get("/authors/eager")

def test_author(client):
    client.get("/authors/1")
"""


def test_the_baseline_is_made_then_holds_fails_on_more_reports_fewer_and_updates(
    blog_project: pytest.Pytester, shapes: Shapes, monkeypatch: pytest.MonkeyPatch
) -> None:
    blog_project.makepyfile(test_base=BASELINE_TESTS)
    path = blog_project.path / "queryprof-baseline.json"
    options = ["--queryprof-baseline=queryprof-baseline.json", "--queryprof-n-plus-one=off"]

    # 1. made on first use, with each test's count and shapes
    result = blog_project.runpytest(*options)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["Baseline queryprof-baseline.json written: 2 added"])
    made = path.read_text()
    assert made.startswith('{\n  "queryprof_baseline": 1,\n  "tests": {\n')  # readable
    tests = json.loads(made)["tests"]
    assert list(tests) == ["test_base.py::test_author", "test_base.py::test_eager"]
    assert (
        tests["test_base.py::test_author"]["queries"],
        len(tests["test_base.py::test_author"]["shapes"]),
    ) == (1, 1)
    assert_lines(
        [f"{count} x {sql}" for sql, count in tests["test_base.py::test_author"]["shapes"].items()],
        f"1 x {shapes.author}",
    )
    assert tests["test_base.py::test_eager"]["queries"] == 2
    assert_lines(
        [f"{count} x {sql}" for sql, count in tests["test_base.py::test_eager"]["shapes"].items()],
        f"1 x {AUTHORS_SHAPE}",
        f"1 x {shapes.eager_posts}",
    )

    # 2. the same counts: passes, the file is left alone
    result = blog_project.runpytest(*options)
    result.assert_outcomes(passed=2)
    assert not has_summary(result)
    assert path.read_text() == made

    # 3. more statements: the test fails, naming what grew; the file is left alone
    monkeypatch.setenv("EAGER_REQUESTS", "3")
    result = blog_project.runpytest(*options)
    result.assert_outcomes(passed=1, failed=1)
    failure = failure_of(result, "test_eager")
    assert_lines(
        failure[:3],
        "test_eager ran 6 statements, baseline 2 (4 more; queryprof-baseline.json)",
        f"  +2 x {AUTHORS_SHAPE} (1 -> 3)",
        f"  +2 x {shapes.eager_posts} (1 -> 3)",
    )
    result.stdout.fnmatch_lines(
        [
            "Baseline queryprof-baseline.json: 1 test ran more statements:",
            "  test_base.py::test_eager: 2 -> 6",
        ]
    )
    assert path.read_text() == made

    # 4. --queryprof-baseline-update accepts them
    result = blog_project.runpytest(*options, "--queryprof-baseline-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["Baseline queryprof-baseline.json written: 1 updated"])
    assert json.loads(path.read_text())["tests"]["test_base.py::test_eager"]["queries"] == 6

    # 5. fewer statements: reported, not written; a new test is added
    monkeypatch.setenv("EAGER_REQUESTS", "2")
    blog_project.makepyfile(
        test_new="""
        def test_new(client):
            client.get("/authors/eager")
        """
    )
    result = blog_project.runpytest(*options)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "Baseline queryprof-baseline.json written: 1 added",
            "Baseline queryprof-baseline.json: 1 test ran fewer statements "
            "(--queryprof-baseline-update records it):",
            "  test_base.py::test_eager: 6 -> 4",
        ]
    )
    tests = json.loads(path.read_text())["tests"]
    assert (
        tests["test_base.py::test_eager"]["queries"],
        tests["test_new.py::test_new"]["queries"],
    ) == (6, 2)


def test_a_baseline_file_queryprof_did_not_write_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile(test_blog=BUDGETS)
    (project.path / "counts.json").write_text('{"test_blog.py::test_eager": 2}')
    result = project.runpytest("--queryprof-baseline=counts.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "counts.json is not a queryprof baseline file" in result.stderr.str()


# -- pytest-xdist -------------------------------------------------------------------------------

XDIST_TESTS = """
import os
from pathlib import Path

import pytest

def _note_worker():
    Path(os.environ["WORKERS_SEEN"], os.environ["PYTEST_XDIST_WORKER"]).touch()

@pytest.mark.parametrize("i", range(7))
@pytest.mark.query_budget(10)
def test_eager(client, i):
    _note_worker()
    for _ in range(int(os.environ.get("EAGER_REQUESTS", "1"))):
        client.get("/authors/eager")

@pytest.mark.query_budget(5)
def test_authors(client):
    _note_worker()
    client.get("/authors")
"""


def test_under_xdist_workers_fail_tests_and_the_controller_merges_and_writes_once(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(test_dist=XDIST_TESTS)
    seen = project.mkdir("workers-seen")
    monkeypatch.setenv("WORKERS_SEEN", str(seen))
    options = ["-n", "2", "--queryprof-report", "--queryprof-baseline=base.json"]

    result = project.runpytest_subprocess(*options)
    result.assert_outcomes(passed=7, failed=1)
    assert sorted(p.name for p in seen.iterdir()) == ["gw0", "gw1"]
    assert_lines(
        failure_of(result, "test_authors"),
        "test_authors ran 21 statements, budget 5 (16 over)",
        f"  20 x {POSTS_SHAPE}   from {LAZY_LOAD}",
        "       N+1: lazy load of Author.posts -> selectinload(Author.posts)",
        f"   1 x {AUTHORS_SHAPE}   from {AUTHORS_QUERY}",
    )
    result.stdout.fnmatch_lines(
        [
            "Most statements: 8 of 8 tests (35 statements in all)",
            "  21  test_dist.py::test_authors",
            "N+1 in 1 test:",
        ]
    )
    assert result.stdout.str().count("Baseline base.json written: 7 added") == 1
    tests = json.loads((project.path / "base.json").read_text())["tests"]
    assert {nodeid: entry["queries"] for nodeid, entry in tests.items()} == {
        f"test_dist.py::test_eager[{i}]": 2 for i in range(7)
    }

    # Each worker reads the baseline: more statements fail there.
    monkeypatch.setenv("EAGER_REQUESTS", "2")
    result = project.runpytest_subprocess(*options)
    result.assert_outcomes(failed=8)
    result.stdout.fnmatch_lines(
        ["test_eager[[]0[]] ran 4 statements, baseline 2 (2 more; base.json)"]
    )
