"""Fixtures of the inner test runs in tests/test_pytest_plugin.py: the example blog, for real.

An inner project loads this module with ``pytest_plugins = ["plugin_blog"]``. Its database
comes from ``QUERYPROF_PLUGIN_DB``: ``sqlite`` (a file per test) or the URL of a PostgreSQL
database the outer test session made for these runs (the blog's tables are dropped before
each test, so each one starts from the same seed). Seeding happens in fixture setup, in the
app's lifespan: it must not count against a marker budget.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from examples.blog.app import create_app
from examples.blog.models import Author, Base, Comment, Post, post_tags
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Delete, create_engine, delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session


def sync_url(url: str) -> str:
    """The same database through a sync driver (to reset and seed it from the test thread)."""
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


@pytest.fixture
def blog_url(tmp_path: Path) -> str:
    database = os.environ.get("QUERYPROF_PLUGIN_DB", "sqlite")
    if database == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/blog.db"
    engine = create_engine(sync_url(database))
    try:
        Base.metadata.drop_all(engine)
    finally:
        engine.dispose()
    return database


@pytest.fixture
def seed_authors() -> int:
    """How many authors the app seeds at startup (3 posts each); override it in a test file."""
    return 20


@pytest.fixture
def app(blog_url: str, seed_authors: int) -> FastAPI:
    return create_app(blog_url, seed_authors=seed_authors)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """Starlette's TestClient: the app (and its lifespan) runs in a thread of its own."""
    with TestClient(app) as client:
        yield client


@pytest_asyncio.fixture
async def asyncio_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """httpx.AsyncClient over ASGITransport, in the test's event loop (pytest-asyncio)."""
    async with app.router.lifespan_context(app), _asgi_client(app) as client:
        yield client


@pytest.fixture
async def anyio_client(app: FastAPI, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """The same for tests marked ``@pytest.mark.anyio``."""
    async with app.router.lifespan_context(app), _asgi_client(app) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _asgi_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://blog")


# -- reseeding at a given scale, for assert_constant_queries ------------------------------------


def _authors(n: int) -> list[Author]:
    return [
        Author(
            name=f"Scaled {a}",
            email=f"scaled{a}@example.com",
            posts=[Post(title=f"Post {p} of {a}", body="...") for p in range(3)],
        )
        for a in range(n)
    ]


def _emptied() -> list[Delete]:
    return [delete(Comment), delete(post_tags), delete(Post), delete(Author)]


def reseed(url: str, authors: int) -> None:
    """Replace the blog's rows with ``authors`` authors of 3 posts each (sync driver)."""
    engine = create_engine(sync_url(url))
    try:
        with Session(engine) as session, session.begin():
            for statement in _emptied():
                session.execute(statement)
            session.add_all(_authors(authors))
    finally:
        engine.dispose()


async def reseed_async(app: FastAPI, authors: int) -> None:
    """The same through the app's own async sessions."""
    factory: async_sessionmaker[AsyncSession] = app.state.session_factory
    async with factory() as session, session.begin():
        for statement in _emptied():
            await session.execute(statement)
        session.add_all(_authors(authors))
