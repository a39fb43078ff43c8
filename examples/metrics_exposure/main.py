"""The apps of ``app.py``, ready for uvicorn (see its docstring for the commands)."""

from __future__ import annotations

import os
import secrets

from sqlalchemy.ext.asyncio import create_async_engine

from examples.metrics_exposure.app import create_app, create_metrics_app, create_token_app
from queryprof import Profiler

engine = create_async_engine(os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///:memory:"))
profiler = Profiler()
profiler.instrument(engine)
app = create_app(engine, profiler)
metrics_app = create_metrics_app(profiler)
token_app = create_token_app(
    engine, profiler, os.environ.get("QUERYPROF_METRICS_TOKEN") or secrets.token_urlsafe(32)
)
