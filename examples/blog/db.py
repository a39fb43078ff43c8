"""Engine, session factory and the request-scoped session dependency."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

# One in-memory SQLite database shared by every session (StaticPool = one connection), so the
# demo needs nothing installed. Fine for a demo that sends one request at a time; for
# concurrent traffic use a file (sqlite+aiosqlite:///./blog.db) or PostgreSQL.
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///:memory:"


def resolve_database_url(database_url: str | None = None) -> str:
    """The explicit argument, else ``$DATABASE_URL``, else the in-memory SQLite database."""
    return database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def create_engine(database_url: str) -> AsyncEngine:
    url = make_url(database_url)
    kwargs: dict[str, Any] = {"echo": False}
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
    else:
        kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800)
    return create_async_engine(url, **kwargs)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One AsyncSession per request, closed (and rolled back if still open) afterwards."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    async with factory() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
