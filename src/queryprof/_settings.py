"""The validated, frozen settings every part of queryprof reads."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

OpenTelemetryMode = Literal["auto"] | bool
FindingsOutput = Literal["span", "log", "both"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Every setting of a :class:`~queryprof.Profiler`, checked once at construction.

    The defaults are safe for production. A bad value raises ``ValueError`` (or
    ``TypeError`` for a value of the wrong type) that names the setting and shows the value.
    """

    enabled: bool = True
    n_plus_one_threshold: int = 5
    duplicate_threshold: int = 2
    repeated_write_threshold: int = 5
    slow_query_threshold: float = 0.5
    long_transaction_threshold: float = 2.0
    explain: bool = True
    explain_analyze: bool = False
    explain_timeout: float = 5.0
    explain_window: float = 300.0
    explain_sample_rate: float = 1.0
    explain_queue_size: int = 100
    explain_concurrency: int = 2
    sample_rate: float = 1.0
    capture_parameters: bool = False
    server_timing: bool = False
    registry: Any = None
    opentelemetry: OpenTelemetryMode = "auto"
    opentelemetry_findings: FindingsOutput = "span"
    sql_route_tags: bool = False
    max_queries_per_scope: int = 10_000
    log_findings: bool = True
    callsite_include: tuple[str, ...] = ()
    callsite_exclude: tuple[str, ...] = ()
    allow_relationships: frozenset[str] = field(default_factory=frozenset)
    allow_sql: tuple[re.Pattern[str], ...] = ()
    allow_locations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_bool(self, "enabled", "explain", "explain_analyze", "capture_parameters")
        _check_bool(self, "server_timing", "log_findings", "sql_route_tags")
        _check_count(self, "n_plus_one_threshold", minimum=2)
        _check_count(self, "duplicate_threshold", minimum=2)
        _check_count(self, "repeated_write_threshold", minimum=2)
        _check_count(self, "max_queries_per_scope", minimum=1)
        _check_seconds(self, "slow_query_threshold")
        _check_seconds(self, "long_transaction_threshold")
        _check_seconds(self, "explain_timeout")
        _check_seconds(self, "explain_window")
        _check_count(self, "explain_queue_size", minimum=1)
        _check_count(self, "explain_concurrency", minimum=1)
        _check_rate(self, "explain_sample_rate")
        _check_rate(self, "sample_rate", zero=True)
        if self.opentelemetry not in ("auto", True, False):
            raise ValueError(
                f"opentelemetry must be True, False or 'auto', not {self.opentelemetry!r}"
            )
        if self.opentelemetry_findings not in ("span", "log", "both"):
            raise ValueError(
                "opentelemetry_findings must be 'span' (span events), 'log' (log events) or "
                f"'both', not {self.opentelemetry_findings!r}"
            )
        for name in ("callsite_include", "callsite_exclude", "allow_locations"):
            object.__setattr__(self, name, _strings(name, getattr(self, name)))
        object.__setattr__(
            self,
            "allow_relationships",
            frozenset(_strings("allow_relationships", self.allow_relationships)),
        )
        object.__setattr__(self, "allow_sql", _patterns("allow_sql", self.allow_sql))

    @classmethod
    def from_environment(cls, **overrides: Any) -> Settings:
        """Build settings from keyword arguments; ``QUERYPROF_ENABLED=0`` turns profiling off."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(
                f"Profiler() got unknown setting(s) {', '.join(unknown)}; "
                f"known settings are: {', '.join(sorted(known))}"
            )
        env = os.environ.get("QUERYPROF_ENABLED")
        if env is not None and "enabled" not in overrides:
            overrides["enabled"] = _env_flag("QUERYPROF_ENABLED", env)
        return cls(**overrides)


def _env_flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be one of 1/0, true/false, yes/no, on/off, not {value!r}")


def _check_bool(settings: Settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")


def _check_count(settings: Settings, name: str, *, minimum: int) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")


def _check_seconds(settings: Settings, name: str) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")
    object.__setattr__(settings, name, float(value))


def _check_rate(settings: Settings, name: str, *, zero: bool = False) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number between 0 and 1, not {value!r}")
    if not (0 <= value <= 1 if zero else 0 < value <= 1):
        lowest = "at least 0" if zero else "more than 0"
        raise ValueError(f"{name} must be {lowest} and at most 1, not {value!r}")
    object.__setattr__(settings, name, float(value))


def _strings(name: str, values: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not the single string {values!r}")
    result = tuple(values)
    for value in result:
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must hold non-empty strings, not {value!r}")
    return result


def _patterns(name: str, values: Iterable[str | re.Pattern[str]]) -> tuple[re.Pattern[str], ...]:
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of patterns, not the single string {values!r}")
    compiled = []
    for value in values:
        if isinstance(value, re.Pattern):
            compiled.append(value)
            continue
        if not isinstance(value, str):
            raise TypeError(f"{name} must hold regular expressions, not {value!r}")
        try:
            compiled.append(re.compile(value, re.IGNORECASE))
        except re.error as exc:
            message = f"{name} holds an invalid regular expression {value!r}: {exc}"
            raise ValueError(message) from exc
    return tuple(compiled)
