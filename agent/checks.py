"""The result of one named check, printed one per line by `doctor` and `selftest`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str

    PASSED: ClassVar[str] = "ok"

    def line(self) -> str:
        return f"[{self.PASSED if self.ok else 'FAIL'}] {self.check}: {self.detail}"
