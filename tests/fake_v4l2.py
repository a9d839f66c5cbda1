"""A fake `v4l2-ctl` over a uvcvideo device, fed by a device fixture directory.

What it prints follows v4l-utils 1.22.1 and 1.26.1 (utils/v4l2-ctl/v4l2-ctl-common.cpp:
print_control, print_qctrl, print_value, common_set; utils/common/v4l2-info.cpp: flags2s joining
flags with ", ", cap2s printing "I/O MC" only from 1.24 on; v4l2-ctl.cpp: doioctl_name printing
"VIDIOC_S_CTRL: failed: <strerror>" on stdout and the exit code 255 after any failed ioctl). A
listing it renders is byte for byte the fixture it parsed (tests check that for every fixture).

`--set-ctrl` behaves as v4l2-ctl and uvcvideo do together:
- an unknown name: "unknown control 'x'" on stderr, exit 1, nothing set;
- user-class controls (0x0098....) one VIDIOC_S_CTRL each, in the order given, carrying on after
  an error; every other class one VIDIOC_S_EXT_CTRLS, which sets all of the class or nothing;
- uvcvideo (drivers/media/usb/uvc/uvc_ctrl.c, uvc_ctrl_set) clamps integers to the range and
  rounds them to the step instead of refusing, clamps booleans to 0/1, refuses a menu value
  outside the range (ERANGE) or not in the menu (EINVAL) and a read-only control (EACCES);
- a dependent control (exposure_time_absolute, white_balance_temperature, focus_absolute) while
  its auto control is on: newer kernels refuse it with EACCES before touching the device
  (uvc_ctrl_is_accessible, which takes the auto control's value from the same ioctl if it is
  there); on older kernels the camera itself refuses it, which uvcvideo reports as EILSEQ (the
  error soyersoyer/cameractrls#25 shows for white_balance_temperature), and uvcvideo commits an
  ioctl's controls in its own order (the order of the listing), not the caller's.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.camera.v4l2_ctl import USER_CLASS, V4l2Control, parse_controls
from agent.process import CommandResult

DEVICES = Path(__file__).resolve().parent / "fixtures" / "devices"
VERSIONS = ("1.22.1", "1.26.1")

# Dependent control -> (its auto control, the auto control's manual value), both spellings.
UVC_DEPENDENCIES = {
    "exposure_time_absolute": ("auto_exposure", 1),
    "exposure_absolute": ("exposure_auto", 1),
    "white_balance_temperature": ("white_balance_automatic", 0),
    "focus_absolute": ("focus_automatic_continuous", 0),
}
_LEGACY_MASTERS = {"white_balance_temperature": "white_balance_temperature_auto",
                   "focus_absolute": "focus_auto"}  # fmt: skip

_TAGS = {
    "int": "(int)    :", "int64": "(int64)  :", "bool": "(bool)   :", "menu": "(menu)   :",
    "intmenu": "(intmenu):", "button": "(button) :", "bitmask": "(bitmask):", "str": "(str)    :",
}  # fmt: skip
# flags2s's order (v4l2-info.cpp, ctrlflags2s).
_FLAG_ORDER = (
    "grabbed", "disabled", "read-only", "update", "inactive", "slider", "write-only",
    "volatile", "has-payload", "execute-on-write", "modify-layout", "dynamic-array",
)  # fmt: skip


class DeviceError(Exception):
    def __init__(self, code: int, control: str) -> None:
        super().__init__(os.strerror(code))
        self.code = code
        self.control = control


@dataclass
class Listing:
    """A `--list-ctrls-menus` listing: its controls, and the class headers in between."""

    controls: list[V4l2Control]
    headers: dict[int, str]  # index of the first control of a class -> the class's name
    raw_lines: dict[int, str] = field(default_factory=dict)  # lines the fake does not model

    @classmethod
    def parse(cls, text: str) -> Listing:
        controls = parse_controls(text)
        headers: dict[int, str] = {}
        raw: dict[int, str] = {}
        lines = text.splitlines()
        index = 0
        for i, line in enumerate(lines):
            if re.match(r"^\s*[a-z0-9_]+ 0x[0-9a-f]{8} \(", line):
                if re.search(r"\((unknown|u8|u16|u32|area|str)", line) or " dims=" in line:
                    raw[index] = line  # payload controls: printed as they came
                index += 1
            elif line and not line.startswith("\t") and i > 0 and lines[i - 1] == "":
                headers[index] = line
        return cls(controls, headers, raw)

    def render(self) -> str:
        out: list[str] = []
        for i, control in enumerate(self.controls):
            if i in self.headers:
                out += ["", self.headers[i], ""]
            out.append(self.raw_lines.get(i) or _qctrl_line(control))
            out += _menu_lines(control)
        return "\n".join(out) + "\n"


def _qctrl_line(c: V4l2Control) -> str:
    """print_qctrl + print_value for the scalar types."""
    head = f"{c.name:>31} {c.cid:#010x} {_TAGS[c.type]}"
    if c.type in ("int", "int64"):
        body = f" min={c.minimum} max={c.maximum} step={c.step} default={c.default}"
    elif c.type == "bool":
        body = f" default={c.default}"
    elif c.type in ("menu", "intmenu"):
        body = f" min={c.minimum} max={c.maximum} default={c.default}"
    elif c.type == "bitmask":
        body = f" max=0x{c.maximum or 0:08x} default=0x{c.default or 0:08x}"
    else:  # button
        body = ""
    shown = c.value or 0
    if c.type == "bitmask" and shown >= 1 << 31:
        shown -= 1 << 32  # print_value's "%d" of the 32-bit value
    value = f" value={shown}"
    if c.type in ("menu", "intmenu") and c.value in c.menu:
        label = c.menu[c.value]
        if c.type == "menu":
            value += f" ({label})"
        else:  # "24000000 (0x16e3600)" -> "(24000000 0x16e3600)"
            number, _, hexa = label.partition(" ")
            value += f" ({number} {hexa.strip('()')})"
    flags = [f for f in _FLAG_ORDER if f in c.flags]
    return head + body + value + (f" flags={', '.join(flags)}" if flags else "")


def _menu_lines(c: V4l2Control) -> list[str]:
    return [f"\t\t\t\t{i}: {label}" for i, label in c.menu.items()]


@dataclass
class V4l2Node:
    """One /dev/videoN of a fixture: what v4l2-ctl prints for it, and its controls' state."""

    info: str
    listing: Listing
    formats: str
    newer_kernel: bool = True  # refuses dependent controls with EACCES (uvc_ctrl_is_accessible)

    @classmethod
    def load(cls, directory: Path) -> V4l2Node:
        def read(name: str) -> str:
            path = directory / name
            return path.read_text() if path.exists() else ""

        return cls(
            read("info.txt"),
            Listing.parse(read("list-ctrls-menus.txt")),
            read("list-formats-ext.txt"),
        )

    @property
    def controls(self) -> dict[str, V4l2Control]:
        return {c.name: c for c in self.listing.controls}

    def _master(self, name: str) -> tuple[V4l2Control, int] | None:
        by_name = self.controls
        entry = UVC_DEPENDENCIES.get(name)
        if entry is None:
            return None
        master, manual = entry
        if master not in by_name and name in _LEGACY_MASTERS:
            master = _LEGACY_MASTERS[name]
        return (by_name[master], manual) if master in by_name else None

    def _coerce(self, control: V4l2Control, value: int) -> int:
        """uvc_ctrl_set: clamp and round, or refuse."""
        if control.read_only:
            raise DeviceError(errno.EACCES, control.name)
        if control.type in ("menu", "intmenu"):
            if not (control.minimum or 0) <= value <= (control.maximum or 0):
                raise DeviceError(errno.ERANGE, control.name)
            if value not in control.menu:
                raise DeviceError(errno.EINVAL, control.name)
            return value
        if control.type == "bool":
            return min(max(value, 0), 1)
        if control.type in ("int", "int64"):
            low, high, step = control.minimum or 0, control.maximum or 0, control.step or 1
            rounded = low + round((value - low) / step) * step
            return min(max(rounded, low), high)
        return value

    def set_ext(self, batch: list[tuple[V4l2Control, int]]) -> None:
        """One VIDIOC_S_EXT_CTRLS: all of it or, where the device refuses, what came before."""
        if self.newer_kernel:
            for control, _ in batch:
                master = self._master(control.name)
                if master is None:
                    continue
                in_request = [v for c, v in batch if c is master[0]]
                current = in_request[-1] if in_request else master[0].value
                if current != master[1]:
                    raise DeviceError(errno.EACCES, control.name)
        coerced = [(c, self._coerce(c, v)) for c, v in batch]  # try: nothing set on a refusal
        order = {c.name: i for i, c in enumerate(self.listing.controls)}
        for control, value in sorted(coerced, key=lambda cv: order[cv[0].name]):
            master = self._master(control.name)
            if master is not None and master[0].value != master[1]:
                raise DeviceError(errno.EILSEQ, control.name)  # the camera stalls the request
            control.value = value
            self._update_flags()

    def _update_flags(self) -> None:
        for name in UVC_DEPENDENCIES:
            control = self.controls.get(name)
            master = self._master(name)
            if control is None or master is None:
                continue
            inactive = master[0].value != master[1]
            control.flags = (control.flags - {"inactive"}) | ({"inactive"} if inactive else set())


@dataclass
class FakeV4l2Ctl:
    """Stands in for the `v4l2-ctl` binary over some /dev/video nodes."""

    nodes: dict[str, V4l2Node]
    version: str = "1.26.1"
    calls: list[list[str]] = field(default_factory=list)

    @classmethod
    def from_fixture(cls, fixture: str, dev: str = "/dev", version: str = "1.26.1") -> FakeV4l2Ctl:
        return cls.from_directory(DEVICES / fixture, dev, version)

    @classmethod
    def from_directory(cls, root: Path, dev: str = "/dev", version: str = "1.26.1") -> FakeV4l2Ctl:
        nodes = {
            f"{dev}/{d.name}": V4l2Node.load(d)
            for d in sorted((root / "v4l2").iterdir())
            if d.is_dir()
        }
        return cls(nodes, version)

    async def __call__(self, argv: Sequence[str]) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        if argv == ["v4l2-ctl", "--version"]:
            return CommandResult(0, f"v4l2-ctl {self.version}\n", "")
        if argv[:2] != ["v4l2-ctl", "-d"] or len(argv) < 4:
            return CommandResult(1, "", "v4l2-ctl: fake called with an unexpected argv\n")
        node = self.nodes.get(argv[2])
        if node is None:
            return CommandResult(1, "", f"Cannot open device {argv[2]}, exiting.\n")
        option = argv[3]
        if option.startswith("--set-ctrl="):
            return self._set(node, option.removeprefix("--set-ctrl="))
        listings = {
            "--info": self._info(node),
            "--list-ctrls-menus": node.listing.render(),
            "--list-formats-ext": node.formats,
        }
        if option in listings:
            return CommandResult(0, listings[option], "")
        return CommandResult(1, "", f"v4l2-ctl: unrecognized option '{option}'\n")

    def _info(self, node: V4l2Node) -> str:
        if self.version < "1.24":
            return node.info.replace("\t\tI/O MC\n", "")
        return node.info

    def _set(self, node: V4l2Node, pairs: str) -> CommandResult:
        by_name = node.controls
        requested: list[tuple[V4l2Control, int]] = []
        for pair in pairs.split(","):
            name, equal, raw = pair.partition("=")
            if not equal:
                return CommandResult(1, "", f"control '{name}' without '='\n")
            if name not in by_name:
                return CommandResult(1, "", f"unknown control '{name}'\n")
            requested.append((by_name[name], int(raw, 0)))
        stdout: list[str] = []
        stderr: list[str] = []
        classes: dict[int, list[tuple[V4l2Control, int]]] = {}
        for control, value in requested:
            classes.setdefault(control.control_class, []).append((control, value))
        use_ext = any(c.type == "int64" or "update" in c.flags for c, _ in requested)
        for control_class in sorted(classes):
            batch = classes[control_class]
            if control_class == USER_CLASS and not use_ext:
                for control, value in batch:  # VIDIOC_S_CTRL, one each, carrying on
                    try:
                        node.set_ext([(control, value)])
                    except DeviceError as err:
                        stdout.append(f"VIDIOC_S_CTRL: failed: {err}")
                        stderr.append(f"{control.name}: {err}")
                continue
            try:
                node.set_ext(batch)
            except DeviceError as err:
                stdout.append(f"VIDIOC_S_EXT_CTRLS: failed: {err}")
                stderr.append(f"{err.control}: {err}")
        code = 255 if stderr else 0
        return CommandResult(
            code, "".join(f"{s}\n" for s in stdout), "".join(f"{s}\n" for s in stderr)
        )


def v4l2_fixtures() -> list[str]:
    return sorted(d.name for d in DEVICES.iterdir() if (d / "v4l2").is_dir())
