"""Validate a settings change as a whole and split it into live and restart-class parts.

The same split MediaMTX makes in `pathConfCanBeUpdated`: some changes apply to the running
pipeline, others recreate it. A change is judged against the values it would produce, so
`{"auto_exposure": false, "exposure_time_us": 8000}` is accepted although exposure_time_us is
inactive before the change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.camera.base import ControlDescriptor, ControlType, ControlValue
from agent.errors import ErrorCode, Problem, SettingsRejected

_TRUE = {"1", "true", "on", "yes"}
_INTEGER = re.compile(r"[+-]?\d+")
_FALSE = {"0", "false", "off", "no"}


@dataclass(frozen=True)
class ChangePlan:
    values: dict[str, ControlValue]
    live: tuple[str, ...]
    restart: tuple[str, ...]


class _Invalid(Exception):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _fmt(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _coerce_bool(d: ControlDescriptor, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise _Invalid(
        ErrorCode.INVALID_VALUE, f"{d.name} takes true/false (or 1/0, on/off), not {_fmt(raw)}"
    )


def _number(d: ControlDescriptor, raw: object) -> float:
    if isinstance(raw, bool):
        raise _Invalid(ErrorCode.INVALID_VALUE, f"{d.name} takes a number, not {_fmt(raw)}")
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            raise _Invalid(
                ErrorCode.INVALID_VALUE, f"{d.name} takes a number, not {_fmt(raw)}"
            ) from None
    else:
        raise _Invalid(ErrorCode.INVALID_VALUE, f"{d.name} takes a number, not {_fmt(raw)}")
    if not math.isfinite(number):
        raise _Invalid(ErrorCode.INVALID_VALUE, f"{d.name} takes a finite number, not {_fmt(raw)}")
    return number


def _check_range(d: ControlDescriptor, number: float) -> None:
    low = -math.inf if d.minimum is None else d.minimum
    high = math.inf if d.maximum is None else d.maximum
    if not low <= number <= high:
        raise _Invalid(
            ErrorCode.OUT_OF_RANGE,
            f"{d.name} {_fmt_number(number)} is out of range"
            f" [{_fmt_number(low)}, {_fmt_number(high)}]",
        )


def _fmt_number(number: float) -> str:
    if isinstance(number, int):
        return str(number)
    number = float(number)
    return str(int(number)) if number.is_integer() else str(number)


def _whole(d: ControlDescriptor, raw: object) -> int:
    """An integer, exactly: a 64-bit control's limits do not survive a float."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
        return int(raw)
    number = _number(d, raw)
    if not number.is_integer():
        raise _Invalid(ErrorCode.INVALID_VALUE, f"{d.name} takes a whole number, not {_fmt(raw)}")
    return int(number)


def _coerce_int(d: ControlDescriptor, raw: object) -> int:
    number = _whole(d, raw)
    _check_range(d, number)
    if d.step and d.minimum is not None and (number - d.minimum) % d.step:
        raise _Invalid(
            ErrorCode.INVALID_VALUE,
            f"{d.name} moves in steps of {_fmt_number(d.step)} from {_fmt_number(d.minimum)}",
        )
    return int(number)


def _coerce_float(d: ControlDescriptor, raw: object) -> float:
    number = _number(d, raw)
    _check_range(d, number)
    return number


def _coerce_menu(d: ControlDescriptor, raw: object) -> int | str:
    for option in d.options:
        if raw == option.value and not isinstance(raw, bool):
            return option.value
        if isinstance(raw, str) and raw.strip().lower() in (
            option.label.lower(),
            str(option.value).lower(),
        ):
            return option.value
    labels = ", ".join(
        f"{o.value} ({o.label})" if str(o.value) != o.label else o.label for o in d.options
    )
    raise _Invalid(
        ErrorCode.INVALID_VALUE, f"{d.name} has no entry {_fmt(raw)}; choose one of: {labels}"
    )


def _coerce_pair(d: ControlDescriptor, raw: object) -> tuple[float, float]:
    parts: list[object]
    if isinstance(raw, str):
        parts = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, list | tuple):
        parts = list(raw)
    else:
        parts = []
    if len(parts) != 2:
        raise _Invalid(
            ErrorCode.INVALID_VALUE,
            f"{d.name} takes two numbers, [red, blue] or 'red,blue', not {_fmt(raw)}",
        )
    first, second = (_coerce_float(d, part) for part in parts)
    return (first, second)


_COERCERS = {
    ControlType.BOOL: _coerce_bool,
    ControlType.INT: _coerce_int,
    ControlType.FLOAT: _coerce_float,
    ControlType.MENU: _coerce_menu,
    ControlType.PAIR: _coerce_pair,
}


def resolve_names(descriptors: Sequence[ControlDescriptor]) -> dict[str, ControlDescriptor]:
    """Canonical and native names, both mapping to the descriptor."""
    by_name: dict[str, ControlDescriptor] = {}
    for d in descriptors:
        by_name[d.name] = d
        for alias in d.aliases:
            by_name.setdefault(alias, d)
    return by_name


def plan_change(
    descriptors: Sequence[ControlDescriptor],
    current: Mapping[str, ControlValue],
    requested: Mapping[str, object],
) -> ChangePlan:
    """Validate ``requested`` as a whole; raises SettingsRejected listing every problem."""
    by_name = resolve_names(descriptors)
    problems: list[Problem] = []
    coerced: dict[str, ControlValue] = {}
    asked_as: dict[str, str] = {}  # canonical name -> the name the request used
    for name, raw in requested.items():
        descriptor = by_name.get(name)
        if descriptor is None:
            problems.append(Problem(name, ErrorCode.UNKNOWN_CONTROL, f"unknown control {name!r}"))
            continue
        if descriptor.read_only:
            problems.append(Problem(name, ErrorCode.READ_ONLY, f"{descriptor.name} is read-only"))
            continue
        try:
            coerced[descriptor.name] = _COERCERS[descriptor.type](descriptor, raw)
            asked_as[descriptor.name] = name
        except _Invalid as err:
            problems.append(Problem(name, err.code, err.detail))
    after = {**current, **coerced}
    for name in coerced:
        reason = by_name[name].inactive_reason(after)
        if reason is not None:
            asked = asked_as[name]
            problems.append(Problem(asked, ErrorCode.INACTIVE, f"{asked} is inactive: {reason}"))
    if problems:
        raise SettingsRejected(problems)
    live = tuple(n for n in coerced if not by_name[n].restarts_stream)
    restart = tuple(n for n in coerced if by_name[n].restarts_stream)
    return ChangePlan(values=coerced, live=live, restart=restart)
