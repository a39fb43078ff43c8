"""A small mapped model set for the detector tests, with a seeding function.

Author 1-n Book (``Author.books`` / ``Book.author``), Book n-n Tag through ``qpt_book_tags``
(``Book.tags``) and Author 1-1 Profile (``Author.profile``, ``uselist=False``). Every table
name starts with ``qpt_`` so the tests create and drop only their own tables on the shared
PostgreSQL and MariaDB servers.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

AUTHORS = 8
BOOKS_PER_AUTHOR = 3
TAG_NAMES = ("fiction", "history", "science", "poetry")
TAGS_PER_BOOK = 2


class Base(AsyncAttrs, DeclarativeBase):
    pass


book_tags = Table(
    "qpt_book_tags",
    Base.metadata,
    Column("book_id", ForeignKey("qpt_books.id"), primary_key=True),
    Column("tag_id", ForeignKey("qpt_tags.id"), primary_key=True),
)


class Author(Base):
    __tablename__ = "qpt_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author", order_by="Book.id")
    profile: Mapped[Profile | None] = relationship(back_populates="author", uselist=False)


class Book(Base):
    __tablename__ = "qpt_books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("qpt_authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")
    tags: Mapped[list[Tag]] = relationship(secondary=book_tags, order_by="Tag.id")


class Tag(Base):
    __tablename__ = "qpt_tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Profile(Base):
    __tablename__ = "qpt_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("qpt_authors.id"), unique=True)
    bio: Mapped[str] = mapped_column(String(200))
    author: Mapped[Author] = relationship(back_populates="profile")


def seed(session: Session) -> None:
    """8 authors with a profile and 3 books each; every book has 2 of the 4 tags. Commits."""
    tags = [Tag(name=name) for name in TAG_NAMES]
    session.add_all(tags)
    for a in range(AUTHORS):
        author = Author(name=f"Author {a}", profile=Profile(bio=f"Biography of author {a}"))
        for b in range(BOOKS_PER_AUTHOR):
            n = a * BOOKS_PER_AUTHOR + b
            tagged = [tags[(n + k) % len(tags)] for k in range(TAGS_PER_BOOK)]
            author.books.append(Book(title=f"Book {a}.{b}", tags=tagged))
        session.add(author)
    session.commit()
