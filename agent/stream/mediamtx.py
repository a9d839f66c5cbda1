"""MediaMTX's control API (v3) and playback server, as far as the agent needs them."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUEST_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class PathStatus:
    # A publisher feeds the path. MediaMTX 1.20 says so in `online`; its older `ready` (now
    # `available`) stays true without one on an alwaysAvailable path.
    online: bool
    bytes_received: int
    readers: int
    source: str | None


class MediaMtxApi:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self._base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self.last_error: str | None = None  # why the last call failed, for the stream's error

    def _get(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self._base_url}{path}", headers=self._headers)  # noqa: S310 - http(s) URL from config
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310
                body: dict[str, Any] = json.load(response)
                return body
        except urllib.error.HTTPError as err:
            if err.code == 404:  # MediaMTX answers 404 for a path nobody publishes
                return {}
            raise

    async def path(self, name: str) -> PathStatus | None:
        """The path's status; None when the API cannot be reached (MediaMTX down)."""
        try:
            body = await asyncio.to_thread(self._get, f"/v3/paths/get/{name}")
        except urllib.error.HTTPError as err:
            self.last_error = f"MediaMTX API answered {err.code} {err.reason}"
            if err.code == 401:
                self.last_error += " (check stream.username/password and the api permission)"
            return None
        except (OSError, ValueError) as err:
            self.last_error = f"MediaMTX API at {self._base_url} unreachable: {err}"
            return None
        if body is None:
            return None
        self.last_error = None
        source = body.get("source") or {}
        return PathStatus(
            online=bool(body.get("online", body.get("ready"))),
            bytes_received=int(body.get("bytesReceived") or 0),
            readers=len(body.get("readers") or []),
            source=source.get("type") if isinstance(source, dict) else None,
        )


class MediaMtxPlayback:
    """MediaMTX's playback server: what was recorded, and a time range of it as one file."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self._base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}

    def _open(self, path: str, timeout: float) -> Any:
        request = urllib.request.Request(f"{self._base_url}{path}", headers=self._headers)  # noqa: S310 - http(s) URL from config
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310

    def _spans(self, stream_path: str) -> list[tuple[float, float]]:
        with self._open(f"/list?{urllib.parse.urlencode({'path': stream_path})}", 5) as response:
            listed = json.load(response)
        spans = []
        for span in listed:
            start = dt.datetime.fromisoformat(span["start"]).timestamp()
            spans.append((start, start + float(span["duration"])))
        return spans

    async def spans(self, stream_path: str) -> list[tuple[float, float]]:
        """The recorded spans (Unix start, end), one per stretch without a gap; [] when
        nothing is recorded."""
        try:
            return await asyncio.to_thread(self._spans, stream_path)
        except urllib.error.HTTPError as err:
            # 404: no segment yet. 400 with a missing directory: the recorder has not written
            # its first segment since MediaMTX started (on_list.go answers FindSegments' other
            # errors with 400).
            if err.code == 404 or (err.code == 400 and b"no such file" in err.read().lower()):
                return []
            raise

    def _download(self, stream_path: str, start: float, duration: float, dest: Path) -> None:
        query = urllib.parse.urlencode(
            {
                "path": stream_path,
                "start": dt.datetime.fromtimestamp(start, dt.UTC).isoformat(),
                "duration": f"{duration:.3f}",
                # "mp4" keeps the samples before `start` (from the keyframe the cut starts on)
                # at their true times, hidden by an edit list; "fmp4" stacks them all on the
                # first timestamp with zero durations (muxer_fmp4.go), which strict players
                # and `ffmpeg -c copy` stumble on.
                "format": "mp4",
            }
        )
        with self._open(f"/get?{query}", 30) as response, dest.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)

    async def download(self, stream_path: str, start: float, duration: float, dest: Path) -> None:
        """Write [start, start + duration] of the recording to ``dest`` (stream copy)."""
        await asyncio.to_thread(self._download, stream_path, start, duration, dest)
