"""`python -m agent.upload_worker`: the process that copies captures to the S3 store.

The agent starts it when something is queued and stops it when the queue is empty, so the S3
client (obstore, a Rust library: 10 MiB resident) never loads into the agent, whose idle memory
stays what it was, and a stuck upload can be killed without touching the event loop.

It speaks JSON lines. Its first stdin line is the store (endpoint, region, bucket and keys:
never in argv, which `ps` shows); every later line asks for one upload and is answered by one
stdout line:

    {"id": "...", "path": "/abs/file", "key": "cam/pictures/...", "max_kbit_s": 0}
    {"id": "...", "ok": true, "bytes": 123, "sha256": "...", "seconds": 0.2, "etag": "..."}
    {"id": "...", "ok": false, "error": "the store's error in words"}

Files up to MULTIPART_ABOVE go as one PUT; larger ones as a multipart upload of PART_BYTES
parts. Every request carries the SHA-256 of what it sends (`x-amz-checksum-sha256`), which the
store checks and refuses on a mismatch (BadDigest); the file's own SHA-256 is computed in the
same pass and reported. A multipart upload becomes visible only when it completes, so a store
or a worker killed half-way leaves no partial object under the key; the agent's retry puts the
whole file again under the same key, so there is never a second copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

READ_BYTES = 256 * 1024
MULTIPART_ABOVE = 8 * 1024 * 1024
PART_BYTES = 8 * 1024 * 1024
# Two parts in flight: enough to keep a link busy while the next part is read, and a bound on
# the memory (parts are buffered whole).
PARTS_IN_FLIGHT = 2


class Pacer:
    """Holds the bytes read to `max_kbit_s` on average (0: no cap), sleeping as needed."""

    def __init__(self, max_kbit_s: int) -> None:
        self._bytes_per_s = max_kbit_s * 1000 / 8
        self._began = time.monotonic()
        self.sent = 0

    def take(self, count: int) -> None:
        self.sent += count
        if self._bytes_per_s <= 0:
            return
        due = self._began + self.sent / self._bytes_per_s
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _chunks(path: Path, digest: Any, pacer: Pacer) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)
            pacer.take(len(chunk))
            yield chunk


_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")


def in_words(err: BaseException) -> str:
    """The store's own error (its S3 code and message) rather than the client's whole chain."""
    text = str(err)
    code, message = _CODE.search(text), _MESSAGE.search(text)
    if code is not None:
        said = f"{code.group(1)}: {message.group(1)}" if message else code.group(1)
        return f"the store refused: {said}"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    first = " ".join(text.split())
    for marker in ("Connection refused", "timed out", "dns error", "error sending request"):
        if marker in first:
            return f"cannot reach the store ({marker.lower()}): {first[:300]}"
    return first[:400] or type(err).__name__


def open_store(settings: dict[str, Any]) -> Any:
    from obstore.store import S3Store  # noqa: PLC0415 - the worker's one heavy import

    endpoint = settings["endpoint"] or None
    return S3Store(
        settings["bucket"],
        endpoint=endpoint,
        region=settings["region"],
        access_key_id=settings["access_key_id"],
        secret_access_key=settings["secret_access_key"],
        checksum_algorithm="SHA256",
        # Path-style (`endpoint/bucket/key`): what SeaweedFS, Ceph RGW, Garage and MinIO serve
        # without a wildcard DNS name; AWS S3 takes it too.
        virtual_hosted_style_request=False,
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": timedelta(seconds=10),
            # A part at the slowest cap still fits: the cap paces reads, not the request.
            "timeout": timedelta(seconds=600),
        },
        # The agent retries with its own backoff (and says so); the client only smooths blips.
        retry_config={
            "max_retries": 2,
            "retry_timeout": timedelta(seconds=30),
            "backoff": {
                "init_backoff": timedelta(milliseconds=200),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        },
    )


def upload(store: Any, request: dict[str, Any]) -> dict[str, Any]:
    import obstore  # noqa: PLC0415

    path = Path(request["path"])
    digest = hashlib.sha256()
    pacer = Pacer(int(request.get("max_kbit_s") or 0))
    began = time.monotonic()
    if path.stat().st_size > MULTIPART_ABOVE:
        result = obstore.put(
            store,
            request["key"],
            _chunks(path, digest, pacer),
            use_multipart=True,
            chunk_size=PART_BYTES,
            max_concurrency=PARTS_IN_FLIGHT,
        )
    else:
        body = b"".join(_chunks(path, digest, pacer))
        result = obstore.put(store, request["key"], body, use_multipart=False)
    return {
        "bytes": pacer.sent,
        "sha256": digest.hexdigest(),
        "seconds": round(time.monotonic() - began, 3),
        "etag": result.get("e_tag"),
    }


def answer(body: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


def main() -> int:
    first = sys.stdin.readline()
    if not first:
        return 0
    store = open_store(json.loads(first))
    for line in sys.stdin:
        request = json.loads(line)
        try:
            done = upload(store, request)
        except Exception as err:  # every failure is an answer, in the store's words
            answer({"id": request.get("id"), "ok": False, "error": in_words(err)})
            continue
        answer({"id": request.get("id"), "ok": True, **done})
    return 0


if __name__ == "__main__":
    sys.exit(main())
