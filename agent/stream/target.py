"""Where the encoded stream goes: a MediaMTX path, with the agent's publish credentials."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit


@dataclass(frozen=True)
class StreamTarget:
    url: str  # rtsp://host:port/path, without credentials: the path viewers read
    username: str
    password: str
    rtsp_transport: str = "tcp"
    # The path MediaMTX records, published to beside `url` (the same encode, ffmpeg's tee).
    # Viewers read an alwaysAvailable path that bridges outages with a placeholder; the
    # recorder must not record that placeholder, so it records a path of its own.
    record_path: str | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path.strip("/")

    @property
    def recorded_path(self) -> str:
        """The path the recorder and the supervisor's health check read."""
        return self.record_path or self.path

    def url_with_credentials(self, path: str | None = None) -> str:
        parts = urlsplit(self.url)
        auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"
        moved = parts._replace(path=f"/{path}") if path is not None else parts
        return urlunsplit(moved._replace(netloc=auth + parts.netloc))

    def publish_urls(self) -> list[str]:
        """Every URL the pusher publishes to, with credentials: the viewers' path first."""
        urls = [self.url_with_credentials()]
        if self.record_path and self.record_path != self.path:
            urls.append(self.url_with_credentials(self.record_path))
        return urls
