"""v4l2-ctl as the V4L2 device layer: argument lists in, parsed listings out (pure code).

v4l-utils' v4l2-ctl is GPL; running it as a separate program keeps this project MIT. What it
prints is parsed as v4l-utils 1.22.1 (Debian bookworm) and 1.26.1 (trixie) print it:

- `--list-ctrls-menus`: print_qctrl in utils/v4l2-ctl/v4l2-ctl-common.cpp,
      "%31s %#8.8x (int)    : min=%lld max=%lld step=%lld default=%lld value=%d flags=%s"
  one layout per type (int, int64, bool, menu, intmenu, button, bitmask, ...), the flags joined
  by ", " (flags2s in utils/common/v4l2-info.cpp: `flags=read-only, inactive`), menu entries as
  "\\t\\t\\t\\t%d: %s" (intmenu: "\\t\\t\\t\\t%d: %lld (0x%llx)").
- `--list-formats-ext`: fourccs as four characters, any of them lowercase or a space ('pRAA',
  'Y10 '), with "-BE" for big-endian variants; sizes "Discrete WxH" or "Stepwise ...".
- `--set-ctrl`: user-class controls are set one at a time (VIDIOC_S_CTRL) and v4l2-ctl carries
  on after an error; every other class with one VIDIOC_S_EXT_CTRLS. A failure prints
  "VIDIOC_S_CTRL: failed: <strerror>" on stdout, "<control>: <strerror>" on stderr, and exits
  255; an unknown name exits 1 before anything is set.

Values that reach a command line have been validated against the descriptors first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_CONTROL = re.compile(
    r"^\s*(?P<name>[a-z0-9_]+)\s+(?P<cid>0x[0-9a-f]{8})\s+\((?P<type>[a-z0-9-]+)\)\s*:(?P<rest>.*)$"
)
_MENU_ENTRY = re.compile(r"^\t+(?P<index>-?\d+): (?P<label>.*)$")
_FIELD = re.compile(r"\b(min|max|step|default|value)=(0x[0-9a-fA-F]+|-?\d+)")
_FLAGS = re.compile(r" flags=(?P<flags>.*)$")
# A menu's value is followed by its label, which may itself hold parentheses:
# "value=3 (Aperture Priority Mode)", intmenu "value=0 (24000000 0x16e3600)".
_VALUE_LABEL = re.compile(r"(value=-?\d+) \(.*\)$")

# V4L2_CTRL_ID2WHICH: the control class is the id's upper bits; 0x00980000 is the user class.
USER_CLASS = 0x00980000


@dataclass
class V4l2Control:
    name: str
    cid: int
    type: str  # int, int64, bool, menu, intmenu, button, bitmask, str, u8, ...
    minimum: int | None = None
    maximum: int | None = None
    step: int | None = None
    default: int | None = None
    value: int | None = None
    flags: frozenset[str] = frozenset()
    menu: dict[int, str] = field(default_factory=dict)

    @property
    def control_class(self) -> int:
        return self.cid & 0x0FFF0000

    @property
    def inactive(self) -> bool:
        return "inactive" in self.flags

    @property
    def read_only(self) -> bool:
        return bool({"read-only", "grabbed"} & self.flags)

    @property
    def write_only(self) -> bool:
        return "write-only" in self.flags


def _number(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def parse_controls(text: str) -> list[V4l2Control]:
    """Controls from `v4l2-ctl --list-ctrls-menus`, in the order listed."""
    controls: list[V4l2Control] = []
    for line in text.splitlines():
        entry = _MENU_ENTRY.match(line)
        if entry and controls:
            controls[-1].menu[int(entry["index"])] = entry["label"].strip()
            continue
        match = _CONTROL.match(line)
        if not match:
            continue  # class headers ("User Controls") and blank lines
        rest = match["rest"]
        control = V4l2Control(name=match["name"], cid=int(match["cid"], 16), type=match["type"])
        flags = _FLAGS.search(rest)
        if flags:
            control.flags = frozenset(f.strip() for f in flags["flags"].split(", "))
            rest = rest[: flags.start()]
        rest = _VALUE_LABEL.sub(r"\1", rest.rstrip())
        for key, raw in _FIELD.findall(rest):
            setattr(control, _ATTRS[key], _number(raw))
        if control.type == "bitmask" and control.value is not None:
            control.value &= 0xFFFFFFFF  # printed with "%d" from a 32-bit int: may look negative
        controls.append(control)
    return controls


_ATTRS = {
    "min": "minimum",
    "max": "maximum",
    "step": "step",
    "default": "default",
    "value": "value",
}


def list_controls_args(device: str) -> list[str]:
    return ["v4l2-ctl", "-d", device, "--list-ctrls-menus"]


def set_controls_args(device: str, values: Mapping[str, int]) -> list[str]:
    pairs = ",".join(f"{name}={int(value)}" for name, value in values.items())
    return ["v4l2-ctl", "-d", device, f"--set-ctrl={pairs}"]


def set_controls_calls(
    device: str, values: Mapping[str, int], masters: Iterable[str]
) -> list[list[str]]:
    """The v4l2-ctl calls for one change: the auto/master controls first, in a call of their
    own, then the rest.

    uvcvideo commits a VIDIOC_S_EXT_CTRLS in its own control order, not the caller's, and newer
    kernels refuse (EACCES) a dependent control while its auto control is on; so
    `focus_automatic_continuous=0,focus_absolute=100` in one call can fail on a real camera,
    while two calls in this order cannot.
    """
    master_names = set(masters)
    first = {k: v for k, v in values.items() if k in master_names}
    rest = {k: v for k, v in values.items() if k not in master_names}
    return [set_controls_args(device, group) for group in (first, rest) if group]


_SET_ERROR = re.compile(r"^(?P<name>[a-z0-9_]+): (?P<reason>.+)$")


def set_errors(stderr: str) -> dict[str, str]:
    """Control -> reason, from what a failed `--set-ctrl` printed on stderr."""
    errors: dict[str, str] = {}
    for line in stderr.splitlines():
        match = _SET_ERROR.match(line.strip())
        if match:
            errors[match["name"]] = match["reason"]
    return errors


def list_formats_args(device: str) -> list[str]:
    return ["v4l2-ctl", "-d", device, "--list-formats-ext"]


# "[0]: 'MJPG' (Motion-JPEG, compressed)"; older v4l2-ctl: "Pixel Format: 'MJPG' (compressed)".
_FORMAT = re.compile(r"^\s*(?:\[\d+\]|Pixel Format\s*): '(?P<fourcc>.{4})(?P<be>-BE)?'")
_SIZE = re.compile(r"Size: Discrete (?P<w>\d+)x(?P<h>\d+)")
_STEPWISE = re.compile(
    r"Size: (?:Stepwise|Continuous) (?P<w0>\d+)x(?P<h0>\d+) - (?P<w>\d+)x(?P<h>\d+)"
)


def parse_formats(text: str) -> dict[str, list[tuple[int, int]]]:
    """FourCC -> frame sizes, from `v4l2-ctl --list-formats-ext`.

    A stepwise range is given by its two ends. Big-endian variants keep their "-BE" suffix and
    a fourcc keeps its case ('pRAA' is a packed raw Bayer format, not 'PRAA').
    """
    formats: dict[str, list[tuple[int, int]]] = {}
    current: str | None = None
    for line in text.splitlines():
        fmt = _FORMAT.match(line)
        if fmt:
            current = fmt["fourcc"].rstrip() + (fmt["be"] or "")
            formats[current] = []
            continue
        if current is None:
            continue
        size = _SIZE.search(line)
        if size:
            formats[current].append((int(size["w"]), int(size["h"])))
            continue
        steps = _STEPWISE.search(line)
        if steps:
            formats[current] += [
                (int(steps["w0"]), int(steps["h0"])),
                (int(steps["w"]), int(steps["h"])),
            ]
    return formats
