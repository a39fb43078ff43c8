"""Response models."""

from __future__ import annotations

from pydantic import BaseModel


class AuthorSummary(BaseModel):
    id: int
    name: str
    post_count: int


class AuthorOut(BaseModel):
    id: int
    name: str
    email: str


class PostSummary(BaseModel):
    id: int
    title: str
    author: str
    tags: list[str]
    comment_count: int
    views: int


class PostPage(BaseModel):
    total: int
    page: int
    size: int
    items: list[PostSummary]


class PostOut(BaseModel):
    id: int
    title: str
    views: int


class CommentOut(BaseModel):
    id: int
    commenter: str
    body: str


class TopPost(BaseModel):
    id: int
    title: str
    views: int


class SlowReport(BaseModel):
    dialect: str
    seconds: float
    elapsed: float
    top_posts: list[TopPost]


class BulkCommentsResult(BaseModel):
    author_id: int
    created: int


class ShapeReport(BaseModel):
    variant: int
    columns: int
    found: bool
