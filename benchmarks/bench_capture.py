"""Per-statement cost of queryprof: bare SQLAlchemy vs instrumented, inside a scope.

    .venv/bin/python benchmarks/bench_capture.py [--rounds 15] [--statements 2000]

SQLite in memory, so the database does as little as possible and the profiler's own cost
shows. Two statements: a Core ``SELECT`` by primary key on a Connection and an ORM
``select()`` of one entity through a Session. Each round times the same statements bare,
with ``enabled=False``, instrumented outside any scope, inside a scope, and inside a scope
left out by ``sample_rate`` (no call site), interleaved so machine noise hits all alike; the
medians of the rounds are printed with the difference per statement.
Targets: at most 5 us added per Core statement, at most 5% per ORM statement.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from queryprof import Profiler, Scope


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def per_statement(run: Callable[[int], None], n: int) -> float:
    # CPU time of this process: other processes on a shared machine inflate wall time only.
    start = time.process_time()
    run(n)
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--statements", type=int, default=2000)
    args = parser.parse_args()

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Item(id=i, name=f"item {i}") for i in range(1, 101))
        session.commit()
    core_stmt = select(Item.__table__).where(Item.__table__.c.id == 7)
    orm_stmt = select(Item).where(Item.id == 7)
    connection = engine.connect()
    session = Session(engine)

    def core(n: int) -> None:
        for _ in range(n):
            connection.execute(core_stmt).fetchall()

    def orm(n: int) -> None:
        for _ in range(n):
            session.execute(orm_stmt).scalars().all()
            session.expunge_all()

    profiler = Profiler(log_findings=False, n_plus_one_threshold=10**9, duplicate_threshold=10**9)
    disabled = Profiler(enabled=False)
    configs = ("bare", "enabled=False", "outside a scope", "in a scope", "unsampled scope")
    results = {name: {config: list[float]() for config in configs} for name in ("core", "orm")}
    core(500)
    orm(500)
    for _ in range(args.rounds):
        for name, run in (("core", core), ("orm", orm)):
            results[name]["bare"].append(per_statement(run, args.statements))
            disabled.instrument()  # attaches nothing
            results[name]["enabled=False"].append(per_statement(run, args.statements))
            disabled.uninstrument()
            profiler.instrument()
            results[name]["outside a scope"].append(per_statement(run, args.statements))
            with profiler.scope("bench"):
                results[name]["in a scope"].append(per_statement(run, args.statements))
            # What profiler.scope() makes under sample_rate < 1 when the draw says no.
            with Scope("bench", sample_rate=0.0):
                results[name]["unsampled scope"].append(per_statement(run, args.statements))
            profiler.uninstrument()

    print(f"{args.rounds} rounds x {args.statements} statements, medians, SQLite in memory")
    print(f"{'statement':<6} {'configuration':<16} {'us/stmt':>8} {'added us':>9} {'added %':>8}")
    for name, configs in results.items():
        bare = statistics.median(configs["bare"])
        for config, samples in configs.items():
            value = statistics.median(samples)
            print(
                f"{name:<6} {config:<16} {value * 1e6:8.2f} {(value - bare) * 1e6:9.2f} "
                f"{(value / bare - 1) * 100:7.1f}%"
            )
    connection.close()
    session.close()


if __name__ == "__main__":
    main()
