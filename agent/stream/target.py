"""Where the encoded stream goes: a MediaMTX path, with the agent's publish credentials."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit


@dataclass(frozen=True)
class StreamTarget:
    url: str  # rtsp://host:port/path, without credentials
    username: str
    password: str
    rtsp_transport: str = "tcp"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path.strip("/")

    def url_with_credentials(self) -> str:
        parts = urlsplit(self.url)
        auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"
        return urlunsplit(parts._replace(netloc=auth + parts.netloc))
