"""queryprof in one minute: ``python -m examples.demo`` (from the repository root).

Serves the example blog (``examples/blog``) with uvicorn inside this process, sends it a
few requests with httpx and lets queryprof report what it sees. queryprof's findings are
log records on the ``queryprof`` logger; everything else here is plain ``print``.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import uvicorn

from examples.blog.app import create_app
from queryprof import Profiler

# (method, path, what is wrong with it)
REQUESTS = [
    ("GET", "/authors", "N+1: one lazy load of Author.posts per author"),
    ("GET", "/authors/eager", "the fix: selectinload, 2 queries in all"),
    ("GET", "/posts", "a healthy page: 5 queries"),
    ("GET", "/posts/1/duplicate", "the same SELECT, same parameters, three times"),
    ("POST", "/authors/1/bulk-comments?count=10", "ten single-row INSERTs from one line"),
    ("GET", "/posts/1/comments-loop", "one SELECT per comment of post 1, in a loop"),
    ("GET", "/reports/slow", "a slow statement sorting on an unindexed column"),
    ("POST", "/posts/1/views?hold=1.2", "a transaction kept open for 1.2 s"),
]

READ_ME = """
What to read above:
  * each "-> METHOD /path" line is a request; the lines under it, before its status, are
    queryprof's findings for that request (N+1, duplicate, slow query, long transaction,
    repeated writes), each with the call site in examples/blog/routes.py and a fix;
  * Server-Timing carries the query count and database time of the request: compare
    /authors with its fixed twin /authors/eager;
  * /posts should produce no finding: five queries, none repeated.
Next: examples/README.md (run the blog with uvicorn, or against PostgreSQL).
"""


async def main() -> None:
    profiler = Profiler(
        slow_query_threshold=0.1, long_transaction_threshold=1.0, server_timing=True
    )
    app = create_app(profiler=profiler)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # lifespan done: tables created and seeded
        if serving.done():
            await serving  # startup failed: re-raise its error
            raise SystemExit("uvicorn did not start")
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"blog example served on http://127.0.0.1:{port}\n", flush=True)

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for method, path, why in REQUESTS:
                print(f"-> {method} {path}    ({why})", flush=True)
                response = await client.request(method, path)
                await asyncio.sleep(0.1)  # let the server finish the request and log findings
                timing = response.headers.get("server-timing", "(no Server-Timing header)")
                print(f"   {response.status_code}  Server-Timing: {timing}\n", flush=True)
    finally:
        server.should_exit = True
        await serving
    print(READ_ME, flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    asyncio.run(main())
