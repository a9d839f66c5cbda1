"""`python -m agent.upload_worker`: the process that copies captures to the S3 store.

The agent starts it when something is queued and stops it when the queue is empty, so the S3
client (obstore, a Rust library: 10 MiB resident) never loads into the agent, whose idle memory
stays what it was, and a stuck upload can be killed without touching the event loop.

It speaks JSON lines. Its first stdin line is the store (endpoint, region, bucket and keys:
never in argv, which `ps` shows); every later line asks for one upload and is answered by one
stdout line:

    {"id": "...", "path": "/abs/file", "key": "cam/pictures/..."}
    {"id": "...", "ok": true, "bytes": 123, "sha256": "...", "seconds": 0.2, "etag": "..."}
    {"id": "...", "ok": false, "error": "the store's error in words"}

Files up to MULTIPART_ABOVE go as one PUT; larger ones as a multipart upload of PART_BYTES
parts. Every request carries the SHA-256 of what it sends (`x-amz-checksum-sha256`), which the
store checks and refuses on a mismatch (BadDigest); the file's own SHA-256 is computed in the
same pass and reported. A multipart upload becomes visible only when it completes, so a store
or a worker killed half-way leaves no partial object under the key; the agent's retry puts the
whole file again under the same key, so there is never a second copy.

`max_kbit_s` is held on the wire, not only on average: the S3 client buffers a part (or a small
file) whole and would send it at the link's speed, a burst that starves the live stream on a
cellular link for as long as it lasts. With a cap, the client's connections go through
PacedProxy, an HTTP proxy on the worker's loopback (CONNECT for https, so TLS stays end to end
with the store) that lets the request bytes out at the cap, from a token bucket of a quarter
second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from obstore.store import ClientConfig

READ_BYTES = 256 * 1024
SEND_BYTES = 16 * 1024  # the proxy's step: fine enough that the cap holds within a second
MULTIPART_ABOVE = 8 * 1024 * 1024
PART_BYTES = 8 * 1024 * 1024
# Two parts in flight: enough to keep a link busy while the next part is read, and a bound on
# the memory (parts are buffered whole).
PARTS_IN_FLIGHT = 2


class TokenBucket:
    """Bytes at ``bytes_per_s``, shared by every connection: a send waits for its tokens. It
    holds a quarter second's worth at most, so a pause (a part's answer) buys no burst."""

    def __init__(self, bytes_per_s: float) -> None:
        self._rate = bytes_per_s
        self._capacity = max(bytes_per_s / 4, SEND_BYTES)
        self._tokens = 0.0
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self, count: int) -> None:
        with self._lock:  # one sender at a time: their sum is what the link sees
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
            self._at = now
            self._tokens -= count
            if self._tokens < 0:
                time.sleep(-self._tokens / self._rate)


class PacedProxy:
    """An HTTP proxy on 127.0.0.1 for the S3 client, to the store's host only: request bytes
    go out at the bucket's rate, answers come back as they arrive."""

    def __init__(self, allowed: tuple[str, int], bucket: TokenBucket) -> None:
        self._allowed = allowed
        self._bucket = bucket
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True, name="proxy").start()

    def _accept(self) -> None:
        while True:
            client, _ = self._server.accept()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as closing:
            closing.enter_context(client)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(SEND_BYTES)
                if not chunk or len(head) > 65536:
                    return
                head += chunk
            method, target = [*head.split(b"\r\n", 1)[0].split(b" "), b"", b""][:2]
            if method == b"CONNECT":  # https: a tunnel; TLS is the client's and the store's
                host, _, port = target.decode().rpartition(":")
                origin, rest = (host, int(port or 443)), head[head.index(b"\r\n\r\n") + 4 :]
            else:  # http: the request as it is, in absolute form, to the store itself
                url = urlsplit(target.decode())
                origin, rest = (url.hostname or "", url.port or 80), head
            if origin != self._allowed:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = closing.enter_context(socket.create_connection(origin, timeout=10))
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            upstream.settimeout(None)
            if method == b"CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            down = threading.Thread(target=_pipe, args=(upstream, client, None), daemon=True)
            down.start()
            with contextlib.suppress(OSError):
                if rest:
                    _send(upstream, rest, self._bucket)
                _pipe(client, upstream, self._bucket)
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
            down.join()


def _send(target: socket.socket, data: bytes, bucket: TokenBucket | None) -> None:
    for start in range(0, len(data), SEND_BYTES):
        piece = data[start : start + SEND_BYTES]
        if bucket is not None:
            bucket.take(len(piece))
        target.sendall(piece)


def _pipe(source: socket.socket, target: socket.socket, bucket: TokenBucket | None) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(SEND_BYTES):
            _send(target, chunk, bucket)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _chunks(path: Path, digest: Any, counted: list[int]) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)
            counted[0] += len(chunk)
            yield chunk


_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")
_CERTIFICATE = re.compile(r"(invalid peer certificate: \w+|UnknownIssuer|certificate verify failed"
                          r"|NotValidForName|CertExpired|BadCertificate)")  # fmt: skip


def in_words(err: BaseException) -> str:
    """The store's own error (its S3 code and message) rather than the client's whole chain."""
    text = str(err)
    code, message = _CODE.search(text), _MESSAGE.search(text)
    if code is not None:
        said = f"{code.group(1)}: {message.group(1)}" if message else code.group(1)
        return f"the store refused: {said}"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    flat = " ".join(text.split())
    trust = _CERTIFICATE.search(flat)
    if trust is not None:
        return (
            f"the store's TLS certificate was refused ({trust[0]}): a store behind a private"
            " CA needs upload.ca_file"
        )
    for marker in ("Connection refused", "timed out", "dns error", "Connection reset"):
        if marker in flat:
            return f"cannot reach the store ({marker.lower()}): {_summary(flat)}"
    return _summary(flat) or type(err).__name__


def _summary(flat: str) -> str:
    """The client's message up to its debug dump (`Debug source: ...`), which says no more."""
    return flat.split(" Debug source:", 1)[0][:400]


def store_origin(settings: dict[str, Any]) -> tuple[str, int]:
    """The host and port the S3 client connects to (AWS's own without an endpoint)."""
    url = urlsplit(settings["endpoint"] or f"https://s3.{settings['region']}.amazonaws.com")
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def open_store(settings: dict[str, Any]) -> Any:
    from obstore.store import S3Store  # noqa: PLC0415 - the worker's one heavy import

    endpoint = settings["endpoint"] or None
    max_kbit_s = int(settings.get("max_kbit_s") or 0)
    client_options: ClientConfig = {
        "allow_http": bool(endpoint and endpoint.startswith("http://")),
        "connect_timeout": timedelta(seconds=10),
        # A whole part at the cap, twice over, and a minute for the store to answer.
        "timeout": timedelta(
            seconds=max(600.0, 2 * PART_BYTES * 8 / (max_kbit_s * 1000) + 60 if max_kbit_s else 0)
        ),
    }
    if settings.get("ca"):
        client_options["root_certificate"] = settings["ca"]  # besides the system's roots
    if max_kbit_s:
        proxy = PacedProxy(store_origin(settings), TokenBucket(max_kbit_s * 1000 / 8))
        client_options["proxy_url"] = proxy.url
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
        client_options=client_options,
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
    counted = [0]
    began = time.monotonic()
    if path.stat().st_size > MULTIPART_ABOVE:
        result = obstore.put(
            store,
            request["key"],
            _chunks(path, digest, counted),
            use_multipart=True,
            chunk_size=PART_BYTES,
            max_concurrency=PARTS_IN_FLIGHT,
        )
    else:
        body = b"".join(_chunks(path, digest, counted))
        result = obstore.put(store, request["key"], body, use_multipart=False)
    return {
        "bytes": counted[0],
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
