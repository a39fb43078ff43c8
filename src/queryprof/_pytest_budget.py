"""Query budgets: the ``query_budget`` marker's arguments, checked, and the verdict on a count."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["fail", "warn", "off"]
MODES: tuple[Mode, ...] = ("fail", "warn", "off")
USAGE = "query_budget(n=None, *, exact=False, n_plus_one=None, include_setup=None)"


class BudgetError(ValueError):
    """A ``query_budget`` marker or call with arguments that make no sense."""


@dataclass(frozen=True, slots=True)
class Budget:
    """What a test (or a block) may run: at most ``n`` statements, or exactly ``n``.

    ``None`` fields fall back to the command line and ini options.
    """

    n: int | None = None
    exact: bool = False
    n_plus_one: Mode | None = None
    include_setup: bool | None = None


def query_budget(
    n: int | None = None,
    *,
    exact: bool = False,
    n_plus_one: str | None = None,
    include_setup: bool | None = None,
) -> Budget:
    """The signature of ``@pytest.mark.query_budget(...)``: its arguments, checked."""
    if n is not None:
        check_count("n", n)
    if not isinstance(exact, bool):
        raise BudgetError(f"exact must be True or False, not {exact!r}")
    if exact and n is None:
        raise BudgetError("exact=True needs a number of statements n")
    mode = check_mode("n_plus_one", n_plus_one) if n_plus_one is not None else None
    if include_setup is not None and not isinstance(include_setup, bool):
        raise BudgetError(f"include_setup must be True or False, not {include_setup!r}")
    return Budget(n, exact, mode, include_setup)


def from_marker(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Budget:
    """Check a marker's arguments by calling the signature; a clear error when they are wrong."""
    shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    try:
        return query_budget(*args, **kwargs)
    except (TypeError, BudgetError) as exc:
        raise BudgetError(
            f"invalid marker @pytest.mark.query_budget({shown}): {exc}; usage: {USAGE}"
        ) from None


def check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BudgetError(f"{name} must be a whole number of statements, not {value!r}")
    if value < 0:
        raise BudgetError(f"{name} must be 0 or more, not {value!r}")
    return value


def check_mode(name: str, value: object) -> Mode:
    if value not in MODES:
        raise BudgetError(f"{name} must be 'fail', 'warn' or 'off', not {value!r}")
    return value


def verdict(count: int, n: int | None, exact: bool) -> str | None:
    """``"ran 21 statements, budget 5 (16 over)"`` when ``count`` breaks the budget, else None."""
    if n is None:
        return None
    ran = f"ran {count} statement{'' if count == 1 else 's'}"
    if exact and count != n:
        difference = f"{abs(count - n)} {'more' if count > n else 'fewer'}"
        return f"{ran}, expected exactly {n} ({difference})"
    if count > n:
        return f"{ran}, budget {n} ({count - n} over)"
    return None
