"""The blog's endpoints: three routers, with some deliberately bad database access.

Query counts below are SQL statements per request on the seed data (20 authors, 3 posts
each, 2 comments per post); BEGIN/COMMIT/ROLLBACK are not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from sqlalchemy import FromClause, func, literal, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from examples.blog.db import SessionDep
from examples.blog.models import Author, Comment, Post
from examples.blog.schemas import (
    AuthorOut,
    AuthorSummary,
    BulkCommentsResult,
    CommentOut,
    PostOut,
    PostPage,
    PostSummary,
    ShapeReport,
    SlowReport,
    TopPost,
)

authors = APIRouter(prefix="/authors", tags=["authors"])
posts = APIRouter(prefix="/posts", tags=["posts"])
reports = APIRouter(prefix="/reports", tags=["reports"])

# SQLite has no sleep(): GET /reports/slow makes it count this many rows per requested
# second in a recursive CTE instead. A rough figure (about 2 million rows/s on a laptop).
SQLITE_ROWS_PER_SECOND = 2_000_000


def _not_found(what: str, ident: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {ident} not found")


# --------------------------------------------------------------------------- authors


@authors.get("", response_model=list[AuthorSummary])
async def list_authors(session: SessionDep) -> list[AuthorSummary]:
    """BAD (N+1): 1 + one lazy load of ``posts`` per author = 21 queries."""
    result = await session.scalars(select(Author).order_by(Author.id))
    out = []
    for author in result.all():
        author_posts = await author.awaitable_attrs.posts  # one SELECT per author
        out.append(AuthorSummary(id=author.id, name=author.name, post_count=len(author_posts)))
    return out


@authors.get("/eager", response_model=list[AuthorSummary])
async def list_authors_eager(session: SessionDep) -> list[AuthorSummary]:
    """FIXED twin of ``GET /authors``: selectinload, 2 queries whatever the author count."""
    stmt = select(Author).options(selectinload(Author.posts)).order_by(Author.id)
    result = await session.scalars(stmt)
    return [AuthorSummary(id=a.id, name=a.name, post_count=len(a.posts)) for a in result.all()]


@authors.get("/{author_id}", response_model=AuthorOut)
async def get_author(author_id: int, session: SessionDep) -> AuthorOut:
    """Primary-key lookup: 1 query."""
    author = await session.get(Author, author_id)
    if author is None:
        raise _not_found("author", author_id)
    return AuthorOut(id=author.id, name=author.name, email=author.email)


@authors.post(
    "/{author_id}/bulk-comments",
    response_model=BulkCommentsResult,
    status_code=status.HTTP_201_CREATED,
)
async def bulk_comments(
    author_id: int,
    session: SessionDep,
    count: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> BulkCommentsResult:
    """BAD (repeated writes): one INSERT per row from the same line, 2 + ``count`` queries.

    The fix is a single ``session.execute(insert(Comment), [{...}, ...])``.
    """
    async with session.begin():
        if await session.get(Author, author_id) is None:
            raise _not_found("author", author_id)
        post_ids = (
            await session.scalars(
                select(Post.id).where(Post.author_id == author_id).order_by(Post.id)
            )
        ).all()
        if not post_ids:
            raise HTTPException(status.HTTP_409_CONFLICT, f"author {author_id} has no posts")
        for i in range(count):
            post_id = post_ids[i % len(post_ids)]
            session.add(Comment(post_id=post_id, commenter="bulk", body=f"Bulk comment {i + 1}"))
            await session.flush()  # one single-row INSERT per iteration
    return BulkCommentsResult(author_id=author_id, created=count)


# --------------------------------------------------------------------------- posts


@posts.get("", response_model=PostPage)
async def list_posts(
    session: SessionDep,
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 10,
) -> PostPage:
    """A typical, well-behaved page: 5 queries, whatever the page size.

    1. the total count, 2. the page of posts, 3. their authors (selectinload),
    4. their tags (selectinload through the association table), 5. comment counts.
    """
    total = await session.scalar(select(func.count()).select_from(Post)) or 0
    stmt = (
        select(Post)
        .options(selectinload(Post.author), selectinload(Post.tags))
        .order_by(Post.created_at.desc(), Post.id.desc())
        .offset((page - 1) * size)
        .limit(size)
    )
    page_posts = (await session.scalars(stmt)).all()
    counts: dict[int, int] = {}
    if page_posts:
        count_stmt = (
            select(Comment.post_id, func.count())
            .where(Comment.post_id.in_([p.id for p in page_posts]))
            .group_by(Comment.post_id)
        )
        counts = dict((await session.execute(count_stmt)).all())
    items = [
        PostSummary(
            id=p.id,
            title=p.title,
            author=p.author.name,
            tags=[t.name for t in p.tags],
            comment_count=counts.get(p.id, 0),
            views=p.views,
        )
        for p in page_posts
    ]
    return PostPage(total=total, page=page, size=size, items=items)


async def _load_post(session: AsyncSession, post_id: int) -> Post:
    post = await session.scalar(select(Post).where(Post.id == post_id))
    if post is None:
        raise _not_found("post", post_id)
    return post


@posts.get("/{post_id}/duplicate", response_model=PostOut)
async def get_post_duplicate(post_id: int, session: SessionDep) -> PostOut:
    """BAD (duplicate queries): the same SELECT with the same parameters, 3 queries.

    ``session.execute(select(...))`` always goes to the database, even when the row is
    already in the identity map; loading once and passing the object around is the fix.
    """
    post = await _load_post(session, post_id)  # "permission check"
    await _load_post(session, post_id)  # "view counter"
    await _load_post(session, post_id)  # "serializer"
    return PostOut(id=post.id, title=post.title, views=post.views)


@posts.get("/{post_id}/comments-loop", response_model=list[CommentOut])
async def get_comments_loop(post_id: int, session: SessionDep) -> list[CommentOut]:
    """BAD (N+1 without lazy loading): the ids, then one SELECT per comment: 1 + n queries
    (3 on the seed data; more after ``POST /authors/{id}/bulk-comments``)."""
    ids: Sequence[int] = (
        await session.scalars(
            select(Comment.id).where(Comment.post_id == post_id).order_by(Comment.id)
        )
    ).all()
    if not ids and await session.get(Post, post_id) is None:
        raise _not_found("post", post_id)
    out = []
    for comment_id in ids:
        comment = (
            await session.execute(select(Comment).where(Comment.id == comment_id))
        ).scalar_one()
        out.append(CommentOut(id=comment.id, commenter=comment.commenter, body=comment.body))
    return out


@posts.post("/{post_id}/views", response_model=PostOut)
async def record_view(
    post_id: int,
    session: SessionDep,
    hold: Annotated[float, Query(ge=0, le=30)] = 2.5,
) -> PostOut:
    """BAD (long transaction): 2 queries, but the transaction (and, on PostgreSQL, the row
    lock of SELECT ... FOR UPDATE) stays open for ``hold`` seconds.

    The sleep stands for an HTTP call made inside the transaction; the fix is to make the
    call before ``session.begin()`` or to increment with a single UPDATE.
    """
    async with session.begin():
        post = await session.scalar(select(Post).where(Post.id == post_id).with_for_update())
        if post is None:
            raise _not_found("post", post_id)
        await asyncio.sleep(hold)
        post.views += 1
    return PostOut(id=post.id, title=post.title, views=post.views)


# --------------------------------------------------------------------------- reports


def _pause(dialect: str, seconds: float) -> FromClause:
    """A one-row subquery that takes about ``seconds`` to compute."""
    if dialect == "postgresql":
        return select(func.pg_sleep(seconds).label("slept")).subquery("pause")
    if dialect in ("mysql", "mariadb"):
        return select(func.sleep(seconds).label("slept")).subquery("pause")
    # SQLite: count to N with a recursive CTE (N rows per requested second, roughly).
    n = max(1, round(seconds * SQLITE_ROWS_PER_SECOND))
    spin = select(literal(1).label("i")).cte("spin", recursive=True)
    spin = spin.union_all(select(spin.c.i + 1).where(spin.c.i < n))
    return select(func.count().label("spun")).select_from(spin).subquery("pause")


@reports.get("/slow", response_model=SlowReport)
async def slow_report(
    request: Request,
    session: SessionDep,
    seconds: Annotated[float, Query(gt=0, le=10)] = 0.4,
    min_views: Annotated[int, Query(ge=0)] = 50,
) -> SlowReport:
    """BAD (slow query): 1 statement taking ~``seconds`` (pg_sleep on PostgreSQL, a heavy
    recursive CTE on SQLite) that also filters and sorts on the unindexed ``posts.views``."""
    dialect: str = request.app.state.engine.dialect.name
    stmt = (
        select(Post.id, Post.title, Post.views)
        .join_from(Post, _pause(dialect, seconds), true())
        .where(Post.views >= min_views)
        .order_by(Post.views.desc(), Post.id)
        .limit(5)
    )
    started = time.perf_counter()
    rows = (await session.execute(stmt)).all()
    elapsed = time.perf_counter() - started
    return SlowReport(
        dialect=dialect,
        seconds=seconds,
        elapsed=round(elapsed, 3),
        top_posts=[TopPost(id=r.id, title=r.title, views=r.views) for r in rows],
    )


# Columns GET /reports/shapes/{variant} picks from, one bit of ``variant`` each.
SHAPE_COLUMNS = (Post.id, Post.author_id, Post.title, Post.views, Post.created_at)
SHAPE_VARIANTS = 100_000


@reports.get("/shapes/{variant}", response_model=ShapeReport)
async def shape_variant(
    variant: Annotated[int, Path(ge=0, lt=SHAPE_VARIANTS)], session: SessionDep
) -> ShapeReport:
    """Many statement shapes from one route, for the memory check of the load benchmark:
    1 query whose column list and labels depend on ``variant``, so each of the
    ``SHAPE_VARIANTS`` values is a distinct statement text (and a distinct shape)."""
    columns = [
        column.label(f"{column.key}_{variant}")
        for bit, column in enumerate(SHAPE_COLUMNS)
        if variant >> bit & 1
    ] or [Post.id.label(f"id_{variant}")]
    stmt = select(*columns).order_by(Post.id).limit(1)
    row = (await session.execute(stmt)).first()
    return ShapeReport(variant=variant, columns=len(columns), found=row is not None)
