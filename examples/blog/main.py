"""A ready-made profiled app: ``uvicorn examples.blog.main:app``."""

from examples.blog.app import create_app
from queryprof import Profiler

app = create_app(profiler=Profiler(server_timing=True))
