"""The contract check: every message a test receives on a channel of docs/asyncapi.yaml must be
valid for that channel, so the document cannot drift from the code. Probes call `check` for
each message; conftest fails the test that received an invalid one."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
# Parameters that may span topic levels (a fleet's base is `camera/<id>`).
MULTI_LEVEL = {"base", "prefix", "client"}


@dataclass(frozen=True)
class Channel:
    name: str
    pattern: re.Pattern[str]
    messages: tuple[tuple[str, Draft7Validator | None], ...]  # content type, payload schema


def _pattern(address: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", address)
    regex = "".join(
        (r"(.+)" if part[1:-1] in MULTI_LEVEL else r"([^/]+)")
        if part.startswith("{") else re.escape(part)
        for part in parts
    )  # fmt: skip
    return re.compile(f"^{regex}$")


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


@cache
def channels() -> tuple[Channel, ...]:
    document = yaml.safe_load(DOCUMENT.read_text())
    default_type = document.get("defaultContentType", "application/json")
    found = []
    for name, channel in document["channels"].items():
        messages = []
        for reference in channel["messages"].values():
            message = _resolve(document, reference)
            content_type = message.get("contentType", default_type)
            payload = message.get("payload", {})
            binary = payload.get("format") == "binary"
            # The payload schema as the root of a document that holds the components, so that
            # its `#/components/...` references resolve.
            schema = {"components": document["components"], **payload}
            messages.append((content_type, None if binary else Draft7Validator(schema)))
        found.append(Channel(name, _pattern(channel["address"]), tuple(messages)))
    return tuple(found)


def problems_with(topic: str, payload: bytes) -> list[str]:
    """Why ``payload`` on ``topic`` breaks the contract ([] when it keeps it, or when the topic
    is on no channel of the document)."""
    matching = [c for c in channels() if c.pattern.match(topic)]
    if not matching or not payload:  # not ours, or a retained message being cleared
        return []
    errors = []
    for channel in matching:
        for content_type, validator in channel.messages:
            if validator is None:
                return []  # binary: any bytes
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                errors.append(f"{channel.name}: not UTF-8")
                continue
            value: Any = text
            if content_type == "application/json" or text.lstrip().startswith(("{", "[")):
                try:
                    value = json.loads(text)
                except ValueError:
                    if content_type == "application/json":
                        errors.append(f"{channel.name}: not JSON")
                        continue
            found = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
            if not found:
                return []
            errors.extend(
                f"{channel.name}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
                for e in found[:3]
            )
    return [f"{topic}: {e}" for e in errors]


_lock = threading.Lock()
_violations: list[str] = []
# On in the test suite (conftest); off for the benchmarks and the chaos run, which use the same
# probes and must not pay for the validation in what they time.
_enabled = False
# What the tests themselves published (bad commands on purpose, planted messages): only what
# the agent publishes is held to the document.
_ours: set[tuple[str, bytes]] = set()


def sent_by_a_test(topic: str, payload: bytes) -> None:
    with _lock:
        _ours.add((topic, payload))


def check(topic: str, payload: bytes) -> None:
    with _lock:
        if not _enabled or (topic, payload) in _ours:
            return
    found = problems_with(topic, payload)
    if found:
        with _lock:
            _violations.extend(found)


def take_violations() -> list[str]:
    with _lock:
        taken = list(_violations)
        _violations.clear()
    return taken


def reset() -> None:
    """At the start of a test: checking on, nothing seen, nothing sent."""
    global _enabled  # noqa: PLW0603 -- one switch for the whole process
    with _lock:
        _enabled = True
        _violations.clear()
        _ours.clear()
