"""The ``queryprof`` console script.

    queryprof fingerprint "SELECT * FROM books WHERE author_id = 42"

prints the statement's normalized shape, its fingerprint and its operation: the values to
put in an allow list or to search logs and dashboards for.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from queryprof.fingerprint import shape_of


def _version() -> str:
    try:
        return version("queryprof")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="queryprof", description="queryprof utilities")
    parser.add_argument("--version", action="version", version=f"queryprof {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    fp = commands.add_parser("fingerprint", help="print the shape and fingerprint of SQL")
    fp.add_argument("sql", nargs="?", help="the statement (read from standard input if absent)")
    args = parser.parse_args(argv)

    if args.command == "fingerprint":
        sql = args.sql if args.sql is not None else sys.stdin.read()
        shape = shape_of(sql)
        print(f"fingerprint: {shape.fingerprint}")
        print(f"operation:   {shape.operation}")
        print(f"shape:       {shape.sql}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
