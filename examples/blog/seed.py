"""Schema creation and deterministic seed data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from examples.blog.models import Author, Base, Comment, Post, Tag

TAG_NAMES = ("async", "fastapi", "performance", "python", "sql")
POSTS_PER_AUTHOR = 3
COMMENTS_PER_POST = 2
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


async def create_schema(engine: AsyncEngine) -> None:
    """Create the ``blog_*`` tables that do not exist yet (never drops anything)."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


async def drop_schema(engine: AsyncEngine) -> None:
    """Drop the ``blog_*`` tables (and nothing else): resets a persistent database."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)


async def seed_if_empty(factory: async_sessionmaker[AsyncSession], authors: int = 20) -> bool:
    """Insert ``authors`` authors with 3 posts each, 2 comments per post and a few tags.

    Does nothing if there is already an author; returns whether it seeded. The data only
    depends on ``authors``, so two fresh databases get identical rows and ids.
    """
    async with factory() as session, session.begin():
        if await session.scalar(select(func.count()).select_from(Author)):
            return False
        tags = [Tag(name=name) for name in TAG_NAMES]
        session.add_all(tags)
        minute = 0
        for a in range(1, authors + 1):
            author = Author(
                name=f"Author {a:02d}",
                email=f"author{a:02d}@example.com",
                created_at=_EPOCH + timedelta(days=a),
            )
            for p in range(1, POSTS_PER_AUTHOR + 1):
                n = (a - 1) * POSTS_PER_AUTHOR + p  # 1-based post number
                minute += 1
                post = Post(
                    title=f"Post {n}: notes {p} by author {a:02d}",
                    body=f"Body of post {n}. " * 5,
                    views=(n * 37) % 101,
                    created_at=_EPOCH + timedelta(minutes=minute),
                    tags=[tags[n % len(tags)], tags[(n + 2) % len(tags)]],
                )
                for c in range(1, COMMENTS_PER_POST + 1):
                    minute += 1
                    post.comments.append(
                        Comment(
                            commenter=f"reader{(n + c) % 7}",
                            body=f"Comment {c} on post {n}",
                            created_at=_EPOCH + timedelta(minutes=minute),
                        )
                    )
                author.posts.append(post)
            session.add(author)
    return True
