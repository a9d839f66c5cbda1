"""Wire formats of the MQTT contract: inbound commands and the outbound event envelope.

Inbound payloads come in two forms: the original text form (`brightness 0.3`, `record 10`) and
JSON with an optional correlation `id`. Parsing never evaluates anything: the text is split on
white space and every value is checked against a table before any handler sees it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from agent.config import MotionRegions
from agent.errors import CommandError, ErrorCode, Problem

MAX_ID_LENGTH = 128
_TIME = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class SettingsCommand:
    values: dict[str, object]
    id: str | None = None
    by: str | None = None  # who asked, as a front end acting for people says (the console)


@dataclass(frozen=True)
class ActionCommand:
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    by: str | None = None


def decode_payload(payload: bytes, limit: int) -> str:
    if len(payload) > limit:
        raise CommandError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"payload of {len(payload)} bytes exceeds the {limit}-byte limit",
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CommandError(
            ErrorCode.BAD_ENCODING, f"payload is not UTF-8 (byte {err.start})"
        ) from None
    text = text.strip()
    if not text:
        raise CommandError(ErrorCode.BAD_REQUEST, "empty payload")
    return text


def _load_json(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise CommandError(ErrorCode.BAD_REQUEST, f"invalid JSON: {err}") from None
    if not isinstance(body, dict):
        raise CommandError(
            ErrorCode.BAD_REQUEST, f"JSON command must be an object, not {type(body).__name__}"
        )
    return body


def _is_json(text: str) -> bool:
    return text.startswith(("{", "["))


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _take_id(body: dict[str, Any]) -> str | None:
    raw = body.pop("id", None)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise CommandError(ErrorCode.BAD_REQUEST, "id must be a string or an integer")
    text = str(raw)
    if not text or len(text) > MAX_ID_LENGTH:
        raise CommandError(ErrorCode.BAD_REQUEST, f"id must have 1-{MAX_ID_LENGTH} characters")
    return text


def _take_by(body: dict[str, Any]) -> str | None:
    """`by`: the person a front end acts for (the console sends `CN=alice`). The broker knows
    only the front end's own certificate; the agent logs this and echoes it in the answer."""
    raw = body.pop("by", None)
    if raw is None:
        return None
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_ID_LENGTH or not raw.isprintable():
        raise CommandError(
            ErrorCode.BAD_REQUEST, f"by must be a printable string of 1-{MAX_ID_LENGTH} characters"
        )
    return raw


def peek_origin(text: str) -> tuple[str | None, str | None]:
    """The id and `by` of a JSON command, as far as they can be read; used to correlate error
    answers."""
    if not text.startswith("{"):
        return None, None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    origin: list[str | None] = []
    for take in (_take_id, _take_by):
        try:
            origin.append(take(body))
        except CommandError:
            origin.append(None)
    return origin[0], origin[1]


def _is_control_value(value: object) -> bool:
    if isinstance(value, list):
        # A pair such as colour_gains; its length and range are the control's to judge.
        return len(value) <= 4 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
    return isinstance(value, bool | int | float | str)


def _reject_extra(body: Mapping[str, Any], what: str) -> None:
    if body:
        raise CommandError(
            ErrorCode.BAD_REQUEST,
            f"unknown field(s) in {what}: {', '.join(sorted(map(str, body)))}",
        )


# -- settings -------------------------------------------------------------------------------


def _numbers(value: object) -> bool:
    """A JSON list of numbers: the pair form of controls such as colour_gains ([red, blue]);
    whether the control takes a pair is judged with the rest of the change."""
    return isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )


def parse_settings(text: str) -> SettingsCommand:
    if _is_json(text):
        body = _load_json(text)
        command_id = _take_id(body)
        by = _take_by(body)
        values = body.pop("set", None)
        _reject_extra(body, "settings command (expected 'id', 'by' and 'set')")
        if not isinstance(values, dict) or not values:
            raise CommandError(
                ErrorCode.BAD_REQUEST, "'set' must be a non-empty object of control: value"
            )
        bad_types = [
            Problem(
                name,
                ErrorCode.INVALID_VALUE,
                f"{name}: value must be a number, boolean, string or a list of numbers",
            )
            for name, value in values.items()
            if not (isinstance(value, bool | int | float | str) or _numbers(value))
        ]
        if bad_types:
            raise CommandError(ErrorCode.INVALID_VALUE, "; ".join(p.detail for p in bad_types))
        return SettingsCommand(values=dict(values), id=command_id, by=by)
    parts = text.split()
    if len(parts) != 2:
        raise CommandError(
            ErrorCode.BAD_REQUEST,
            "expected '<control> <value>' (for example 'brightness 0.3') or JSON {\"set\": {...}}",
        )
    return SettingsCommand(values={parts[0]: parts[1]})


# -- actions --------------------------------------------------------------------------------


def parse_seconds(raw: object, what: str, *, allow_zero: bool = False) -> float:
    """Seconds as a number, a numeric string, or HH:MM:SS.mmm / MM:SS.mmm."""
    if isinstance(raw, bool):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, f"{what} must be seconds, not {raw}")
    value: float | None = None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        match = _TIME.match(raw.strip())
        if match:
            hours, minutes, seconds = match.groups()
            value = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
        else:
            try:
                value = float(raw)
            except ValueError:
                value = None
    if value is None or not math.isfinite(value):
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT, f"{what} must be seconds or HH:MM:SS.mmm, not {raw!r}"
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT,
            f"{what} must be {'>= 0' if allow_zero else '> 0'}, not {raw}",
        )
    return value


def _bool(raw: object, what: str) -> bool:
    if not isinstance(raw, bool):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, f"{what} must be true or false")
    return raw


def _picture(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if args:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "picture takes no arguments")
    quality = body.pop("quality", 90)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "quality must be an integer from 1 to 100")
    return {"quality": quality, "sidecar": _bool(body.pop("sidecar", False), "sidecar")}


def _record(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 1:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: record [seconds]")
    raw = args[0] if args else body.pop("duration", None)
    duration = None if raw is None else parse_seconds(raw, "duration")
    preroll = parse_seconds(body.pop("preroll", 0), "preroll", allow_zero=True)
    return {"duration": duration, "preroll": preroll}


def _stop(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 1:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: stop [job]")
    job = args[0] if args else body.pop("job", None)
    if job is not None and (not isinstance(job, str) or not _JOB_ID.match(job)):
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT, "job must be a job id (letters, digits, '_', '-')"
        )
    return {"job": job}


def _trim(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if args and len(args) != 3:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: trim <file> <start> <end>")
    file, start, end = (
        args if args else (body.pop("file", None), body.pop("start", None), body.pop("end", None))
    )
    if not isinstance(file, str) or not file or "\x00" in file:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "trim needs a file name")
    if start is None or end is None:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "trim needs a start and an end time")
    start_s = parse_seconds(start, "start", allow_zero=True)
    end_s = parse_seconds(end, "end")
    if end_s <= start_s:
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT, f"end ({end_s:g} s) must be after start ({start_s:g} s)"
        )
    mode = body.pop("mode", "fast")
    if mode not in ("fast", "exact"):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "mode must be 'fast' or 'exact'")
    return {
        "file": file,
        "start": start_s,
        "end": end_s,
        "mode": mode,
        "replace": _bool(body.pop("replace", False), "replace"),
    }


STREAM_OPS = ("start", "stop", "restart")


def _stream(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 1:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: stream start|stop|restart")
    op = args[0] if args else body.pop("op", None)
    if op not in STREAM_OPS:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "stream takes start, stop or restart")
    return {"op": op}


JOBS_PAGE_MAX = 50


def _jobs(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 2:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: jobs [offset] [limit]")
    raw_offset = args[0] if args else body.pop("offset", 0)
    raw_limit = args[1] if len(args) > 1 else body.pop("limit", 10)
    whole = "offset and limit must be whole numbers"
    if isinstance(raw_offset, bool) or isinstance(raw_limit, bool):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, whole)
    try:
        offset, limit = int(raw_offset), int(raw_limit)
    except (TypeError, ValueError):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, whole) from None
    if offset < 0 or not 1 <= limit <= JOBS_PAGE_MAX:
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT,
            f"offset must be 0 or more and limit 1 to {JOBS_PAGE_MAX}",
        )
    return {"offset": offset, "limit": limit}


FILES_PAGE_MAX = 200


def _files(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 1:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: files [prefix]")
    prefix = args[0] if args else body.pop("prefix", "")
    before = body.pop("before", None)
    raw_limit = body.pop("limit", 50)
    for value, what in ((prefix, "prefix"), (before, "before")):
        if value is not None and (not isinstance(value, str) or "/" in value or "\x00" in value):
            raise CommandError(
                ErrorCode.INVALID_ARGUMENT, f"{what} must be a file name (part), without '/'"
            )
    if isinstance(raw_limit, bool) or not isinstance(raw_limit, int):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "limit must be a whole number")
    if not 1 <= raw_limit <= FILES_PAGE_MAX:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, f"limit must be 1 to {FILES_PAGE_MAX}")
    return {"prefix": prefix, "before": before, "limit": raw_limit}


def _delete(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 1:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: delete <file>")
    file = args[0] if args else body.pop("file", None)
    if not isinstance(file, str) or not file:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "delete needs a file name")
    return {"file": file}


def _upload(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 1:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: upload <file>")
    file = args[0] if args else body.pop("file", None)
    if not isinstance(file, str) or not file:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "upload needs a file name")
    return {"file": file}


def _motion(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    """`motion`: where motion is looked for, as JSON (`mask`, `zones`: normalised polygons)."""
    if args:
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT,
            'motion takes JSON: {"action": "motion", "mask": [[[x, y], ...]], "zones":'
            ' [{"name": ..., "polygon": [[x, y], ...]}]}',
        )
    given = {key: body.pop(key) for key in ("mask", "zones") if key in body}
    if not given:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "motion needs a mask or zones (or both)")
    try:
        regions = MotionRegions.model_validate(given)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise CommandError(ErrorCode.INVALID_ARGUMENT, problems) from None
    dumped = regions.model_dump()
    return {key: dumped[key] for key in given}


TIMELAPSE_MAX_FRAMES = 999_999  # frame numbers have six digits


def _whole(raw: object, what: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, f"{what} must be a whole number")
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, f"{what} must be a whole number") from None
    if not low <= value <= high:
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT, f"{what} must be {low} to {high}, not {value}"
        )
    return value


def _instant(raw: object, what: str) -> float:
    """An ISO 8601 time with its time zone (`2026-12-03T06:00:00Z`), as Unix time."""
    if not isinstance(raw, str):
        raise CommandError(ErrorCode.INVALID_ARGUMENT, f"{what} must be an ISO 8601 time")
    try:
        at = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT,
            f"{what} must be an ISO 8601 time such as 2026-12-03T06:00:00Z, not {raw!r}",
        ) from None
    if at.tzinfo is None:
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT, f"{what} needs a time zone (Z or +HH:MM): {raw!r}"
        )
    return at.timestamp()


def _timelapse(args: list[str], body: dict[str, Any]) -> dict[str, Any]:
    if len(args) > 2:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "usage: timelapse <interval_s> [count]")
    raw_interval = args[0] if args else body.pop("interval", None)
    raw_count = args[1] if len(args) > 1 else body.pop("count", None)
    raw_until = body.pop("until", None)
    if raw_interval is None:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "timelapse needs an interval in seconds")
    interval = parse_seconds(raw_interval, "interval")
    count = None if raw_count is None else _whole(raw_count, "count", 1, TIMELAPSE_MAX_FRAMES)
    until = None if raw_until is None else _instant(raw_until, "until")
    if count is None and until is None:
        raise CommandError(
            ErrorCode.INVALID_ARGUMENT,
            "timelapse needs a count or an end time (until): a series must end",
        )
    quality = body.pop("quality", 90)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise CommandError(ErrorCode.INVALID_ARGUMENT, "quality must be an integer from 1 to 100")
    return {
        "interval": interval,
        "count": count,
        "until": until,
        "assemble": _bool(body.pop("assemble", True), "assemble"),
        "fps": _whole(body.pop("fps", 25), "fps", 1, 120),
        "lock": _bool(body.pop("lock", False), "lock"),
        "quality": quality,
    }


ActionParser = Callable[[list[str], dict[str, Any]], dict[str, Any]]

StatusFormat = Literal["json", "text"]


def status_messages(
    body: dict[str, Any], status_topic: str, events_topic: str, status_format: StatusFormat
) -> list[tuple[str, bytes]]:
    """Where an event goes. "json": the event on `BASE/status`. "text" (the original system's
    contract, whose Flutter app shows `BASE/status` as it comes): the plain message there
    ("SUCCESS: brightness set to 0.3"), and the JSON event on `BASE/events`."""
    payload = json.dumps(body).encode()
    if status_format == "text":
        return [(events_topic, payload), (status_topic, str(body["message"]).encode())]
    return [(status_topic, payload)]


ACTION_PARSERS: dict[str, ActionParser] = {
    "picture": _picture,
    "record": _record,
    "stop": _stop,
    "trim": _trim,
    "stream": _stream,
    "jobs": _jobs,
    "files": _files,
    "delete": _delete,
    "upload": _upload,
    "timelapse": _timelapse,
    "motion": _motion,
}


def parse_action(text: str) -> ActionCommand:
    if _is_json(text):
        body = _load_json(text)
        command_id = _take_id(body)
        by = _take_by(body)
        name = body.pop("action", None)
        if not isinstance(name, str):
            raise CommandError(ErrorCode.BAD_REQUEST, "JSON action needs an 'action' string")
        args: list[str] = []
    else:
        command_id = by = None
        name, *args = text.split()
        body = {}
    parser = ACTION_PARSERS.get(name.lower())
    if parser is None:
        raise CommandError(
            ErrorCode.UNKNOWN_ACTION,
            f"unknown action {name[:40]!r}; known: {', '.join(ACTION_PARSERS)}",
        )
    params = parser(args, body)
    _reject_extra(body, f"{name} action")
    return ActionCommand(action=name.lower(), params=params, id=command_id, by=by)


# -- outbound -------------------------------------------------------------------------------


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(
    camera: str,
    name: str,
    *,
    ok: bool = True,
    message: str = "",
    command_id: str | None = None,
    job: str | None = None,
    data: Mapping[str, Any] | None = None,
    error: CommandError | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """The envelope of every `BASE/status` message; `by` only on what a front end asked for
    someone (the console)."""
    body: dict[str, Any] = {
        "ts": utc_now(),
        "camera": camera,
        "event": name,
        "ok": ok,
        "id": command_id,
        "job": job,
        "message": message,
        "data": dict(data) if data is not None else {},
    }
    if by is not None:
        body["by"] = by
    if error is not None:
        body["error"] = {"code": str(error.code), "detail": error.detail}
        problems = getattr(error, "problems", None)
        if problems:
            body["error"]["problems"] = [
                {"control": p.control, "code": str(p.code), "detail": p.detail} for p in problems
            ]
    return body
