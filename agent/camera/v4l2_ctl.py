"""v4l2-ctl as the V4L2 device layer: argument lists in, parsed controls out (pure code).

v4l-utils' v4l2-ctl is GPL; running it as a separate program keeps this project MIT. Its
control listing (`--list-ctrls-menus`) is parsed from the format v4l2-ctl prints
(utils/v4l2-ctl/v4l2-ctl-common.cpp, print_qctrl):

    "%31s %#8.8x (int)    : min=%lld max=%lld step=%lld default=%lld" " value=%d" " flags=%s"
    "\\t\\t\\t\\t%d: %s" (menu entries)

Values that reach a command line have been validated against these descriptors first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CONTROL = re.compile(
    r"^\s*(?P<name>[a-z0-9_]+)\s+(?P<cid>0x[0-9a-f]{8})\s+\((?P<type>[a-z0-9]+)\)\s*:(?P<rest>.*)$"
)
_MENU_ENTRY = re.compile(r"^\t+(?P<index>-?\d+): (?P<label>.+)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclass
class V4l2Control:
    name: str
    cid: int
    type: str  # int, bool, menu, intmenu, button, int64, ...
    minimum: int | None = None
    maximum: int | None = None
    step: int | None = None
    default: int | None = None
    value: int | None = None
    flags: frozenset[str] = frozenset()
    menu: dict[int, str] = field(default_factory=dict)

    @property
    def inactive(self) -> bool:
        return "inactive" in self.flags

    @property
    def read_only(self) -> bool:
        return bool({"read-only", "grabbed"} & self.flags)


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
        # A menu's value is followed by its label: "value=3 (Aperture Priority Mode)".
        rest = re.sub(r"\s\([^)]*\)", "", rest)
        fields = dict(_FIELD.findall(rest))
        control = V4l2Control(name=match["name"], cid=int(match["cid"], 16), type=match["type"])
        for key in ("min", "max", "step", "default", "value"):
            if key in fields and re.fullmatch(r"-?\d+", fields[key]):
                setattr(control, _ATTRS[key], int(fields[key]))
        if "flags" in fields:
            control.flags = frozenset(fields["flags"].split(","))
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


def set_controls_args(device: str, values: dict[str, int]) -> list[str]:
    """One call for the whole change: v4l2-ctl sets them with a single VIDIOC_S_EXT_CTRLS."""
    pairs = ",".join(f"{name}={int(value)}" for name, value in values.items())
    return ["v4l2-ctl", "-d", device, f"--set-ctrl={pairs}"]


def list_formats_args(device: str) -> list[str]:
    return ["v4l2-ctl", "-d", device, "--list-formats-ext"]


_FORMAT = re.compile(r"^\s*\[\d+\]: '(?P<fourcc>[A-Z0-9 ]{4})'")
_SIZE = re.compile(r"Size: Discrete (?P<w>\d+)x(?P<h>\d+)")


def parse_formats(text: str) -> dict[str, list[tuple[int, int]]]:
    """FourCC -> discrete frame sizes, from `v4l2-ctl --list-formats-ext`."""
    formats: dict[str, list[tuple[int, int]]] = {}
    current: str | None = None
    for line in text.splitlines():
        fmt = _FORMAT.match(line)
        if fmt:
            current = fmt["fourcc"].strip()
            formats[current] = []
            continue
        size = _SIZE.search(line)
        if size and current is not None:
            formats[current].append((int(size["w"]), int(size["h"])))
    return formats
