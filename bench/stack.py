"""The local system the benchmarks measure: our PKI, the shipped broker and MediaMTX configs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack import Broker, MediaServer

from pki.authority import CertificateAuthority


@dataclass(frozen=True)
class Stack:
    root: Path
    broker: Broker
    media: MediaServer


@contextmanager
def local_stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="camera-bench-") as tmp:
        root = Path(tmp)
        CertificateAuthority(root / "pki").init()
        broker, media = Broker(root / "pki", root / "broker"), MediaServer(root / "mediamtx")
        broker.start()
        try:
            media.start()
            try:
                yield Stack(root, broker, media)
            finally:
                media.stop()
        finally:
            broker.stop()
