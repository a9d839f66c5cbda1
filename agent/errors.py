"""Exceptions of the agent, and the closed set of error codes its MQTT answers carry.

    AgentError
    ├── ConfigError             bad configuration at start-up (the process exits with a message)
    ├── CameraError             the camera backend failed (code camera_error)
    └── CommandError            a command is answered with ok=false and an ErrorCode
        └── SettingsRejected    a settings change with one problem per control (all-or-nothing)

Every ErrorCode is documented in the README; clients may switch on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    PAYLOAD_TOO_LARGE = "payload_too_large"  # over mqtt.max_payload_bytes
    BAD_ENCODING = "bad_encoding"  # payload is not UTF-8
    BAD_REQUEST = "bad_request"  # malformed text command or JSON, wrong JSON types
    UNKNOWN_CONTROL = "unknown_control"
    READ_ONLY = "read_only"
    INACTIVE = "inactive"  # the control depends on another one (e.g. auto exposure on)
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"  # wrong type for the control, unknown menu entry, off-step
    INVALID_SETTINGS = "invalid_settings"  # several problems of different kinds; see `problems`
    UNKNOWN_ACTION = "unknown_action"
    INVALID_ARGUMENT = "invalid_argument"  # an action's argument is missing or wrong
    NOT_AVAILABLE = "not_available"  # the action cannot run now (the stream is stopped...)
    BUSY = "busy"
    NOT_FOUND = "not_found"
    INVALID_PATH = "invalid_path"
    IO_ERROR = "io_error"
    INVALID_RESPONSE_TOPIC = "invalid_response_topic"
    CAMERA_ERROR = "camera_error"
    STREAM_ERROR = "stream_error"  # the stream went down or cannot start; `detail` says why
    INTERRUPTED = "interrupted"  # the agent was killed while the job ran (reported at restart)
    INTERNAL_ERROR = "internal_error"


class AgentError(Exception):
    """Base of the agent's own exceptions."""


class ConfigError(AgentError):
    """The configuration cannot be used; the message tells the user what to change."""


class CameraError(AgentError):
    """The camera backend failed to do what was asked."""


class CommandError(AgentError):
    """A command that is answered with an error; ``detail`` is for humans."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Problem:
    """One control's problem within a rejected settings change."""

    control: str
    code: ErrorCode
    detail: str


class SettingsRejected(CommandError):
    """A settings change refused as a whole, listing every problem."""

    def __init__(self, problems: list[Problem]) -> None:
        codes = {p.code for p in problems}
        code = codes.pop() if len(codes) == 1 else ErrorCode.INVALID_SETTINGS
        super().__init__(code, "; ".join(p.detail for p in problems))
        self.problems = problems
