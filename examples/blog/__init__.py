"""A small FastAPI + async SQLAlchemy blog: the demo and test target of queryprof.

Some endpoints are deliberately bad (N+1, duplicate queries, a slow statement, a long
transaction, row-by-row inserts) so the profiler has something to find; each has a comment
saying so and, where it makes sense, a fixed twin.
"""

from examples.blog.app import create_app

__all__ = ["create_app"]
