"""ORM models of the blog: Author 1-n Post 1-n Comment, Post n-n Tag.

Table names carry a ``blog_`` prefix so the example can share a PostgreSQL database with
other test suites without colliding.

Every foreign-key column is indexed, except that ``blog_posts.views`` and
``blog_comments.body`` are deliberately left without an index: ``GET /reports/slow``
filters and sorts on ``views``, which is the kind of slow query queryprof should flag.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, ForeignKey, Index, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base; ``AsyncAttrs`` adds ``obj.awaitable_attrs.<relationship>``."""


# Association table of the Post n-n Tag relationship. The composite primary key indexes
# (post_id, tag_id); the extra index serves lookups by tag.
post_tags = Table(
    "blog_post_tags",
    Base.metadata,
    Column("post_id", ForeignKey("blog_posts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("blog_tags.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_blog_post_tags_tag_id", "tag_id"),
)


class Author(Base):
    __tablename__ = "blog_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # lazy="select" (the default) is kept on purpose: GET /authors loads it one author at a
    # time through ``awaitable_attrs`` (the N+1), GET /authors/eager uses selectinload.
    posts: Mapped[list[Post]] = relationship(
        back_populates="author", lazy="select", order_by="Post.id"
    )


class Post(Base):
    __tablename__ = "blog_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("blog_authors.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    views: Mapped[int] = mapped_column(default=0)  # deliberately NOT indexed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    author: Mapped[Author] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(
        back_populates="post", order_by="Comment.id", cascade="all, delete-orphan"
    )
    tags: Mapped[list[Tag]] = relationship(
        secondary=post_tags, back_populates="posts", order_by="Tag.name"
    )


class Comment(Base):
    __tablename__ = "blog_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("blog_posts.id"), index=True)
    commenter: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)  # deliberately NOT indexed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    post: Mapped[Post] = relationship(back_populates="comments")


class Tag(Base):
    __tablename__ = "blog_tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)

    posts: Mapped[list[Post]] = relationship(secondary=post_tags, back_populates="tags")
