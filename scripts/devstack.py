"""Run the shipped broker and MediaMTX configs natively: used by `scripts/run` and the tests.

The configs under broker/ and mediamtx/ are read as shipped; only listen addresses/ports and
file paths are rewritten, plus what a deployment must supply: `user root` for Mosquitto (started
as root it would drop to the `mosquitto` user, which cannot read the 0600 keys camera-pki
writes) and the password hashes of MediaMTX's two users (its placeholders match nothing).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the stack's other servers need no S3 client
    from obstore.store import S3Store

REPO = Path(__file__).resolve().parent.parent
BROKER_CONF = REPO / "broker" / "mosquitto.conf"
MEDIAMTX_CONF = REPO / "mediamtx" / "mediamtx.yml"
MEDIAMTX_CONTAINERFILE = REPO / "mediamtx" / "Containerfile"
WEB_CONF = REPO / "web" / "nginx.conf"
CONTAINER_PKI = "/mosquitto/certs"
WEB_CONTAINER_PKI = "/etc/nginx/certs"
WEB_CONTAINER_CAPTURES = "/srv/captures/"
WEB_CONTAINER_CONSOLE = "/srv/console/"
WEB_CONTAINER_CONSOLE_VENDOR = "/srv/console-vendor/"
WEB_CONTAINER_CONSOLE_SOCKET_DIR = "/run/camera-console/"
WEB_CONTAINER_STREAM_AUTH = "/etc/nginx/stream/authorization.conf"
CONSOLE_DIR = REPO / "console"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_broker_config(
    pki_dir: Path,
    data_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    conf_d: Path | None = None,
    server_dir: Path | None = None,
) -> str:
    """The shipped config with its listener moved to host:port and its paths made local;
    ``conf_d``, the include_dir (a site's bridge snippet), next to ``data_dir`` by default;
    ``server_dir``, the certificate it presents (`servers/NAME`), the PKI's `server/` if None."""
    out: list[str] = []
    conf_d = conf_d or data_dir.parent / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    for line in BROKER_CONF.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "listener":
            out.append(f"listener {port} {host}")
        elif key == "persistence_location":
            out.append(f"persistence_location {data_dir}/")
        elif key == "include_dir":
            out.append(f"include_dir {conf_d}")
        elif key in {"certfile", "keyfile"} and server_dir is not None:
            out.append(f"{key} {server_dir}/{value.rsplit('/', 1)[1]}")
        elif value.startswith(CONTAINER_PKI):
            out.append(f"{key} {pki_dir}{value.removeprefix(CONTAINER_PKI)}")
        else:
            out.append(line)
    out.append("user root")
    return "\n".join(out) + "\n"


def read_log(path: Path) -> str:
    """A server's log so far ("" before it wrote one)."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text(errors="replace")
    return ""


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass
class Broker:
    """A real Mosquitto running the shipped config; its output goes to ``log_path``."""

    pki_dir: Path
    work_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    server_dir: Path | None = None  # its own server certificate (`servers/NAME`)

    @property
    def config_path(self) -> Path:
        return self.work_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "mosquitto.log"

    @property
    def conf_d(self) -> Path:
        """Its include_dir: where a site's bridge snippet goes."""
        return self.work_dir / "conf.d"

    def config_text(self) -> str:
        return render_broker_config(
            self.pki_dir,
            self.work_dir / "data",
            self.port,
            conf_d=self.conf_d,
            server_dir=self.server_dir,
        )

    def start(self) -> None:
        (self.work_dir / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        log: IO[bytes] = self.log_path.open("ab")
        self.process = subprocess.Popen(
            # Line-buffered (stdbuf execs mosquitto, same pid): its log is readable as it runs,
            # not only after a clean exit.
            ["stdbuf", "-oL", "mosquitto", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a test's Ctrl-C does not hit it
        )
        log.close()
        try:
            wait_for_port("127.0.0.1", self.port)
        except OSError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log_text()}") from None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its config and the ACL file."""
        if self.process is None:
            raise RuntimeError("the broker is not running")
        self.process.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        return read_log(self.log_path)


def render_web_config(
    pki_dir: Path,
    captures_dir: Path,
    work_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    media: MediaServer | None = None,
) -> str:
    """The shipped nginx.conf with its listener moved to host:port, the PKI, captures, console
    and socket paths made local, MediaMTX's WebRTC and HLS ports those of ``media``, its pid,
    temporary files and stream authorization in work_dir, and `user root` (started as root,
    nginx's workers would run as nobody, who cannot enter the tests' private directories)."""
    text = WEB_CONF.read_text()
    text = text.replace("listen 8443 ssl http2;", f"listen {host}:{port} ssl http2;")
    text = text.replace(WEB_CONTAINER_PKI, str(pki_dir))
    text = text.replace(WEB_CONTAINER_CAPTURES, f"{captures_dir}/")
    text = text.replace(WEB_CONTAINER_CONSOLE, f"{CONSOLE_DIR}/web/")
    text = text.replace(WEB_CONTAINER_CONSOLE_VENDOR, f"{CONSOLE_DIR}/node_modules/")
    text = text.replace(WEB_CONTAINER_CONSOLE_SOCKET_DIR, f"{console_socket_dir(work_dir)}/")
    text = text.replace(WEB_CONTAINER_STREAM_AUTH, str(work_dir / "stream-authorization.conf"))
    webrtc, hls = (media.webrtc_port, media.hls_port) if media is not None else (8889, 8888)
    text = text.replace("https://mediamtx:8889", f"https://127.0.0.1:{webrtc}")
    text = text.replace("https://mediamtx:8888", f"https://127.0.0.1:{hls}")
    text = text.replace("/tmp/nginx", f"{work_dir}/nginx")
    return "user root;\n" + text


def console_socket_dir(web_work_dir: Path) -> Path:
    """Where the console service's socket lives for a natively run nginx (beside its files)."""
    return web_work_dir / "console"


def stream_authorization(credentials: StreamCredentials | None) -> str:
    """nginx's line with the MediaMTX viewer's credentials (none: the video is refused)."""
    if credentials is None:
        return 'set $stream_authorization "";\n'
    token = base64.b64encode(f"viewer:{credentials.viewer}".encode()).decode()
    return f'set $stream_authorization "Basic {token}";\n'


@dataclass
class WebServer:
    """A real nginx running the shipped web/nginx.conf: the console, the live video and the
    captures over mutual TLS."""

    pki_dir: Path
    captures_dir: Path
    work_dir: Path
    port: int = field(default_factory=free_port)
    media: MediaServer | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def console_socket(self) -> Path:
        return console_socket_dir(self.work_dir) / "console.sock"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "nginx.conf"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "nginx.log"

    @property
    def captures_url(self) -> str:
        return f"https://localhost:{self.port}/captures/"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.captures_dir.mkdir(parents=True, exist_ok=True)
        self.console_socket.parent.mkdir(parents=True, exist_ok=True)
        authorization = self.work_dir / "stream-authorization.conf"
        authorization.write_text(
            stream_authorization(self.media.credentials if self.media else None)
        )
        authorization.chmod(0o600)
        self.config_path.write_text(
            render_web_config(
                self.pki_dir, self.captures_dir, self.work_dir, self.port, media=self.media
            )
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                # -e: not even a first line to the compiled-in /var/log/nginx/error.log
                ["nginx", "-e", "stderr", "-p", str(self.work_dir), "-c", str(self.config_path),
                 "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_for_port("127.0.0.1", self.port)
        except OSError:
            self.stop()
            raise RuntimeError(f"nginx did not start; log:\n{self.log_text()}") from None

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: nginx re-reads its config, certificates and CRL. Returns once every old
        worker has gone: until then an old worker may still take a new connection."""
        if self.process is None:
            raise RuntimeError("nginx is not running")
        before = self._workers()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while not (self._workers() and not self._workers() & before):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not reload; log:\n{self.log_text()}")
            time.sleep(0.02)

    def _workers(self) -> set[int]:
        if self.process is None:
            return set()
        with contextlib.suppress(OSError):
            path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            return {int(pid) for pid in path.read_text().split()}
        return set()

    def stop(self) -> None:
        if self.process is not None:
            terminate_group(self.process)
            self.process = None

    def log_text(self) -> str:
        return read_log(self.log_path)


def console_config_toml(pki_dir: Path, broker_port: int, socket: Path, identity: str) -> str:
    """A camera-console config for a local broker and nginx (native run and tests)."""
    client = pki_dir / "clients" / identity
    return f"""\
[mqtt]
host = "127.0.0.1"
port = {broker_port}
ca = "{pki_dir / "ca_chain.pem"}"
cert = "{client / "cert.pem"}"
key = "{client / "key.pem"}"

[console]
socket = "{socket}"
"""


@dataclass
class ConsoleService:
    """`camera-console run`, the browser console's service, on the socket nginx proxies to."""

    broker: Broker
    web: WebServer
    work_dir: Path
    identity: str = "console"
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.work_dir / "console.log"

    def start(self, timeout: float = 20.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "console.toml"
        config.write_text(
            console_config_toml(
                self.broker.pki_dir, self.broker.port, self.web.console_socket, self.identity
            )
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "console", "run", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while "console listening on" not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the console did not start; log:\n{self.log_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            terminate_group(self.process)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def log_text(self) -> str:
        return read_log(self.log_path)


def agent_config_toml(
    pki_dir: Path,
    broker_port: int,
    state_root: Path,
    media: MediaServer | None = None,
    web: WebServer | None = None,
) -> str:
    """A camera-agent config for a local broker, MediaMTX and nginx (native run and tests)."""
    client_dir = pki_dir / "clients" / "agent"
    stream = (
        f"""
[stream]
url = "{media.rtsp_url}"
username = "agent"
password = "{media.credentials.agent}"
api_url = "{media.api_url}"
playback_url = "{media.playback_url}"
"""
        if media is not None
        else "\n[stream]\nautostart = false\n"
    )
    return (
        stream
        + f"""\
[mqtt]
host = "127.0.0.1"
port = {broker_port}
ca = "{pki_dir / "ca_chain.pem"}"
cert = "{client_dir / "cert.pem"}"
key = "{client_dir / "key.pem"}"
base_topic = "camera"

[camera]
id = "cam"
backend = "testsrc"

[storage]
captures_dir = "{state_root / "captures"}"
state_dir = "{state_root / "state"}"
"""
        + (f'public_url = "{web.captures_url}"\n' if web is not None else "")
    )


@dataclass(frozen=True)
class StreamCredentials:
    """Passwords of MediaMTX's two users; MediaMTX itself only ever sees their hashes."""

    agent: str
    viewer: str

    @classmethod
    def generate(cls) -> StreamCredentials:
        return cls(secrets.token_urlsafe(18), secrets.token_urlsafe(18))

    @classmethod
    def load_or_create(cls, path: Path) -> StreamCredentials:
        if path.exists():
            return cls(**json.loads(path.read_text()))
        credentials = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"agent": credentials.agent, "viewer": credentials.viewer}))
        path.chmod(0o600)
        return credentials


def mediamtx_hash(password: str) -> str:
    digest = hashlib.sha256(password.encode()).digest()
    return "sha256:" + base64.b64encode(digest).decode()


def render_mediamtx_config(
    credentials: StreamCredentials,
    addresses: dict[str, str] | None = None,
    recordings: Path | None = None,
    certs: Path | None = None,
) -> str:
    """The shipped mediamtx.yml with the two password hashes in place of its placeholders, and
    optionally other listen addresses, recordings directory and PKI directory (in place of the
    container's /certs, whose `server/` holds the server certificate)."""
    addresses = addresses or {}
    hashes = {
        "agent": mediamtx_hash(credentials.agent),
        "viewer": mediamtx_hash(credentials.viewer),
    }
    out: list[str] = []
    user = None
    for line in MEDIAMTX_CONF.read_text().splitlines():
        key, _, _ = line.strip().partition(":")
        if line.strip().startswith("- user:"):
            user = line.split(":", 1)[1].strip()
        if key in addresses and not line.startswith(" "):
            out.append(f"{key}: {addresses[key]}")
        elif key == "recordPath" and recordings is not None:
            shipped = line.split(":", 1)[1].strip()
            indent = line.split("recordPath:")[0]
            out.append(f"{indent}recordPath: {recordings}{shipped.removeprefix('/recordings')}")
        elif key == "pass" and user in hashes:
            out.append(line.split("pass:")[0] + f"pass: {hashes[user]}")
        elif key.endswith(("ServerKey", "ServerCert")) and certs is not None:
            out.append(line.replace(f": {MEDIAMTX_CERTS}/", f": {certs}/"))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


# Where the shipped mediamtx.yml expects the PKI's files (podman-compose.yml mounts them there).
MEDIAMTX_CERTS = "/certs"


def mediamtx_version() -> str:
    for line in MEDIAMTX_CONTAINERFILE.read_text().splitlines():
        if line.startswith("ARG MEDIAMTX_VERSION="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"no ARG MEDIAMTX_VERSION in {MEDIAMTX_CONTAINERFILE}")


def mediamtx_environment() -> dict[str, str]:
    """The `ENV` lines of mediamtx/Containerfile: how the shipped image runs MediaMTX."""
    found: dict[str, str] = {}
    for line in MEDIAMTX_CONTAINERFILE.read_text().splitlines():
        if line.startswith("ENV "):
            key, _, value = line.removeprefix("ENV ").strip().partition("=")
            found[key] = value
    return found


def mediamtx_binary() -> Path:
    """The pinned MediaMTX, built once and cached outside the repository."""
    result = subprocess.run(
        [str(REPO / "scripts" / "build-mediamtx")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"building MediaMTX failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port_pair() -> int:
    """An even UDP port whose successor is free too (RTP and RTCP must be adjacent)."""
    for _ in range(100):
        # Linux gives odd ports to bind(0) (even ones are kept for connect), so step down one.
        port = free_port() & ~1
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp,
        ):
            try:
                rtp.bind(("127.0.0.1", port))
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free RTP/RTCP port pair")


@dataclass
class MediaServer:
    """A real MediaMTX running the shipped config on loopback ports."""

    work_dir: Path
    credentials: StreamCredentials = field(default_factory=StreamCredentials.generate)
    rtsp_port: int = field(default_factory=free_port)
    rtsps_port: int = field(default_factory=free_port)
    rtp_port: int = field(default_factory=free_port_pair)
    srtp_port: int = field(default_factory=free_port_pair)
    hls_port: int = field(default_factory=free_port)
    webrtc_port: int = field(default_factory=free_port)
    webrtc_udp_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    playback_port: int = field(default_factory=free_port)
    path: str = "cam"
    # The PKI whose server certificate MediaMTX presents (made in work_dir when not given).
    pki_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        """Every port its own: each was free when drawn, but two draws can return the same
        number (the kernel hands a port released a moment ago out again), and eleven draws
        per server make that a flaky test now and then."""
        taken: set[int] = set()
        for name in ("rtp_port", "srtp_port"):  # pairs: RTP and RTCP side by side
            port = getattr(self, name)
            while port in taken or port + 1 in taken:
                port = free_port_pair()
            taken |= {port, port + 1}
            setattr(self, name, port)
        for name in ("rtsp_port", "rtsps_port", "hls_port", "webrtc_port", "webrtc_udp_port",
                     "api_port", "playback_port"):  # fmt: skip
            port = getattr(self, name)
            while port in taken:
                port = free_port()
            taken.add(port)
            setattr(self, name, port)

    @property
    def rtsp_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.rtsp_port}/{self.path}"

    def viewer_url(self) -> str:
        return f"rtsp://viewer:{self.credentials.viewer}@127.0.0.1:{self.rtsp_port}/{self.path}"

    def rtsps_viewer_url(self, host: str = "localhost") -> str:
        """RTSPS by a name the server certificate carries (camera-pki puts localhost in it)."""
        return f"rtsps://viewer:{self.credentials.viewer}@{host}:{self.rtsps_port}/{self.path}"

    @property
    def hls_url(self) -> str:
        return f"https://localhost:{self.hls_port}/{self.path}/"

    @property
    def webrtc_url(self) -> str:
        return f"https://localhost:{self.webrtc_port}/{self.path}/"

    @property
    def certs(self) -> Path:
        return self.pki_dir if self.pki_dir is not None else self.work_dir / "pki"

    @property
    def ca_file(self) -> Path:
        """What a player trusts to check MediaMTX's certificate."""
        return self.certs / "ca_chain.pem"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def playback_url(self) -> str:
        return f"http://127.0.0.1:{self.playback_port}"

    @property
    def recordings(self) -> Path:
        return self.work_dir / "recordings"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "mediamtx.yml"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "mediamtx.log"

    def config_text(self) -> str:
        addresses = {
            "rtspAddress": self.rtsp_port,
            "rtspsAddress": self.rtsps_port,
            "rtpAddress": self.rtp_port,
            "rtcpAddress": self.rtp_port + 1,
            "srtpAddress": self.srtp_port,
            "srtcpAddress": self.srtp_port + 1,
            "hlsAddress": self.hls_port,
            "webrtcAddress": self.webrtc_port,
            "webrtcLocalUDPAddress": self.webrtc_udp_port,
            "apiAddress": self.api_port,
            "playbackAddress": self.playback_port,
        }
        return render_mediamtx_config(
            self.credentials,
            {k: f"127.0.0.1:{v}" for k, v in addresses.items()},
            self.recordings,
            self.certs,
        )

    def start(self) -> None:
        from pki.authority import CertificateAuthority  # noqa: PLC0415

        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.pki_dir is None:
            CertificateAuthority(self.certs).init()  # a no-op once made
        self.config_path.write_text(self.config_text())
        binary = mediamtx_binary()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(binary), str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                # Go's TLS held to the policy, as in the shipped image (mediamtx/Containerfile).
                env={**os.environ, **mediamtx_environment()},
                start_new_session=True,
            )
        try:
            wait_for_port("127.0.0.1", self.api_port)
            wait_for_port("127.0.0.1", self.rtsp_port)
            wait_for_port("127.0.0.1", self.rtsps_port)
        except OSError:
            self.stop()
            raise RuntimeError(f"MediaMTX did not start; log:\n{self.log_text()}") from None

    def stop(self) -> None:
        if self.process is not None:
            terminate_group(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return read_log(self.log_path)


SEAWEEDFS_BUILD = REPO / "scripts" / "build-seaweedfs"


def seaweedfs_binary() -> Path:
    """The pinned SeaweedFS (`weed`), built once and cached outside the repository."""
    result = subprocess.run([str(SEAWEEDFS_BUILD)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"building SeaweedFS failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class StoreIdentity:
    """An S3 identity of the store: its key pair and what it may do (SeaweedFS actions such
    as `Write:captures/cam/*`)."""

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]

    @classmethod
    def for_camera(cls, camera: str, bucket: str = "captures") -> StoreIdentity:
        """A camera's own keys: it reads, writes and lists only its prefix (`{camera}/`)."""
        scope = f"{bucket}/{camera}/*"
        return cls(
            f"camera-{camera}", "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30),
            (f"Read:{scope}", f"Write:{scope}", f"List:{scope}"),
        )  # fmt: skip

    @classmethod
    def admin(cls) -> StoreIdentity:
        return cls(
            "admin", "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30),
            ("Admin", "Read", "Write", "List", "Tagging"),
        )  # fmt: skip

    def credentials_lines(self) -> str:
        """What `upload.credentials_file` holds."""
        return f"AWS_ACCESS_KEY_ID={self.access_key}\nAWS_SECRET_ACCESS_KEY={self.secret_key}\n"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": list(self.actions),
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StoreIdentity:
        key = body["credentials"][0]
        return cls(body["name"], key["accessKey"], key["secretKey"], tuple(body["actions"]))


@dataclass
class ObjectStore:
    """A real SeaweedFS (`weed server -s3`: master, volume server, filer and S3 gateway in one
    process) on loopback ports, its identities in a static S3 config."""

    work_dir: Path
    bucket: str = "captures"
    identities: list[StoreIdentity] = field(default_factory=list)
    s3_port: int = 0
    # A PKI: the S3 gateway answers https on s3_https_port too, with its server certificate.
    pki_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not any(i.name == "admin" for i in self.identities):
            self.identities.insert(0, StoreIdentity.admin())
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                 "s3.grpc", "s3.https")  # fmt: skip
        taken = {self.s3_port} if self.s3_port else set()
        for name in names:  # two draws of a free port may return the same number
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            self._ports[name] = port
        if not self.s3_port:
            port = free_port()
            while port in taken:
                port = free_port()
            self.s3_port = port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def https_endpoint(self) -> str:
        """The https endpoint (with ``pki_dir``): the server certificate names `localhost`."""
        return f"https://localhost:{self._ports['s3.https']}"

    @property
    def admin(self) -> StoreIdentity:
        return next(i for i in self.identities if i.name == "admin")

    @property
    def log_path(self) -> Path:
        return self.work_dir / "weed.log"

    def add_identity(self, identity: StoreIdentity) -> StoreIdentity:
        """Before start (the config is read at start)."""
        self.identities.append(identity)
        return identity

    def start(self, timeout: float = 60.0) -> None:
        data = self.work_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "s3.json"
        config.write_text(json.dumps({"identities": [i.to_json() for i in self.identities]}))
        config.chmod(0o600)
        p = self._ports
        argv = [
            str(seaweedfs_binary()), "server", f"-dir={data}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false", "-volume.max=8",
            "-master.volumeSizeLimitMB=64",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        ]  # fmt: skip
        if self.pki_dir is not None:
            server = self.pki_dir / "server"
            argv += [f"-s3.port.https={p['s3.https']}", f"-s3.cert.file={server / 'cert.pem'}",
                     f"-s3.key.file={server / 'key.pem'}"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.work_dir,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._request("HEAD", f"/{self.bucket}") in (200, 403, 404):
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start; log:\n{read_log(self.log_path)[-3000:]}")

    def _request(self, method: str, path: str) -> int:
        """One request signed with the admin's keys (curl's SigV4); its HTTP status, 0 when
        nothing answered."""
        admin = self.admin
        result = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method,
             "--max-time", "10", "--aws-sigv4", "aws:amz:us-east-1:s3",
             "--user", f"{admin.access_key}:{admin.secret_key}", f"{self.endpoint}{path}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return int(result.stdout or 0)

    def stored_checksum(self, key: str) -> str | None:
        """The SHA-256 the store recorded for an object at its upload (`x-amz-checksum-sha256`
        of a HEAD in checksum mode), as it says it: base64, `-N` after a multipart's."""
        admin = self.admin
        result = subprocess.run(
            ["curl", "-sS", "-I", "--max-time", "10", "-H", "x-amz-checksum-mode: ENABLED",
             "--aws-sigv4", "aws:amz:us-east-1:s3",
             "--user", f"{admin.access_key}:{admin.secret_key}",
             f"{self.endpoint}/{self.bucket}/{key}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        for line in result.stdout.splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "x-amz-checksum-sha256":
                return value.strip()
        return None

    def client(self, who: StoreIdentity | None = None) -> S3Store:
        """An S3 client (obstore, the agent's own) with ``who``'s keys, the admin's by default."""
        from obstore.store import S3Store  # noqa: PLC0415 - only the S3 tests load it

        who = who or self.admin
        return S3Store(
            self.bucket, endpoint=self.endpoint, region="us-east-1",
            access_key_id=who.access_key, secret_access_key=who.secret_key,
            virtual_hosted_style_request=False, client_options={"allow_http": True},
        )  # fmt: skip

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``, as the store lists it: key and size."""
        import obstore  # noqa: PLC0415

        listed: dict[str, int] = {}
        for batch in obstore.list(self.client(), prefix=prefix or None):
            for meta in batch:
                listed[meta["path"]] = meta["size"]
        return listed

    def object_sha256(self, key: str) -> str:
        """The SHA-256 of the object's bytes as the store gives them back."""
        import obstore  # noqa: PLC0415

        return hashlib.sha256(bytes(obstore.get(self.client(), key).bytes())).hexdigest()

    def agent_settings(self, who: StoreIdentity, credentials: Path) -> dict[str, str]:
        """The agent's environment for uploads to this store with ``who``'s keys, which are
        written to ``credentials`` (`upload.credentials_file`)."""
        credentials.parent.mkdir(parents=True, exist_ok=True)
        credentials.write_text(who.credentials_lines())
        credentials.chmod(0o600)
        return {
            "CAMERA_AGENT_UPLOAD__ENABLED": "true",
            "CAMERA_AGENT_UPLOAD__ENDPOINT": self.endpoint,
            "CAMERA_AGENT_UPLOAD__BUCKET": self.bucket,
            "CAMERA_AGENT_UPLOAD__CREDENTIALS_FILE": str(credentials),
        }

    def create_bucket(self) -> None:
        status = self._request("PUT", f"/{self.bucket}")
        if status not in (200, 409):  # 409: it is there already
            raise RuntimeError(f"cannot create bucket {self.bucket}: HTTP {status}")

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            terminate_group(self.process)
            self.process = None


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group at once (a crash, not a stop), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def terminate_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the process group, wait, SIGKILL what is left; returns the exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def prepare_pki(pki_dir: Path) -> Path:
    """`scripts/run`'s PKI: made on first run, with the identities the run uses; returns the
    operator's PKCS#12 bundle, for a browser."""
    from pki.authority import CertificateAuthority, Role  # noqa: PLC0415

    ca = CertificateAuthority(pki_dir)
    if ca.init():
        # A separate identity to watch with: the broker takes the certificate's CN as client
        # id, so a mosquitto_sub and a mosquitto_pub sharing `operator` would take each other's
        # session.
        ca.issue("viewer", Role.VIEWER)
        print(f"generated a PKI in {pki_dir}")
    if ca.load_registry().find_active("console") is None:
        # The console service's own identity (a home made before the console had none).
        ca.issue("console", Role.CONSOLE)
    # What a person imports into a browser to open the console as the operator.
    return ca.browser_bundle("operator")


def main(argv: list[str]) -> int:
    """`scripts/run`: PKI on first run, broker, MediaMTX, nginx, then the agent in the
    foreground."""
    import argparse  # noqa: PLC0415 - only the command line needs it

    parser = argparse.ArgumentParser(prog="scripts/run")
    parser.add_argument("home", type=Path, help="work directory (PKI, broker data, captures)")
    parser.add_argument("--port", type=int, default=8883, help="broker port on 127.0.0.1")
    parser.add_argument("--web-port", type=int, default=8443, help="nginx port on 127.0.0.1")
    parser.add_argument(
        "--any-ports", action="store_true",
        help="free ports instead of the usual ones, for every server (the tests use it)",
    )  # fmt: skip
    parser.add_argument(
        "--with-s3", action="store_true",
        help="also a SeaweedFS S3 store on 127.0.0.1:8333, which the agent uploads its captures to",
    )  # fmt: skip
    args = parser.parse_args(argv)
    home: Path = args.home.resolve()
    pki_dir = home / "pki"
    bundle = prepare_pki(pki_dir)
    credentials = StreamCredentials.load_or_create(home / "stream-credentials.json")
    if args.any_ports:
        broker = Broker(pki_dir, home / "broker")
        media = MediaServer(home / "mediamtx", credentials=credentials, pki_dir=pki_dir)
        web = WebServer(pki_dir, home / "captures", home / "web", media=media)
    else:
        broker = Broker(pki_dir, home / "broker", port=args.port)
        media = MediaServer(
            home / "mediamtx", credentials=credentials, pki_dir=pki_dir,
            rtsp_port=8554, rtsps_port=8322, rtp_port=8000, srtp_port=8004,
            hls_port=8888, webrtc_port=8889,
            webrtc_udp_port=8189, api_port=9997, playback_port=9996,
        )  # fmt: skip
        web = WebServer(pki_dir, home / "captures", home / "web", port=args.web_port, media=media)
    console = ConsoleService(broker, web, home / "console")
    store = local_store(home, 0 if args.any_ports else 8333) if args.with_s3 else None
    servers: list[Broker | MediaServer | WebServer | ConsoleService | ObjectStore] = [
        broker, media, web, console, *([store] if store is not None else []),
    ]  # fmt: skip
    started: list[Broker | MediaServer | WebServer | ConsoleService | ObjectStore] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        if store is not None:
            store.create_bucket()
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    config = home / "agent.toml"
    config.write_text(
        agent_config_toml(pki_dir, broker.port, home, media=media, web=web)
        + (upload_config_toml(store, home / "s3-credentials") if store is not None else "")
    )

    def tls(identity: str) -> str:
        client = pki_dir / "clients" / identity
        return (
            f"-h 127.0.0.1 -p {broker.port} --cafile {pki_dir}/ca_chain.pem"
            f" --cert {client}/cert.pem --key {client}/key.pem"
        )

    viewer = pki_dir / "clients" / "viewer"

    print(
        f"broker on 127.0.0.1:{broker.port} (log: {broker.log_path}),"
        f" MediaMTX (log: {media.log_path}), nginx on 127.0.0.1:{web.port} (log: {web.log_path})\n"
        f"watch:   ffplay {media.rtsps_viewer_url()}   (RTSPS; plain RTSP on this machine"
        f" only: {media.viewer_url()})\n"
        f"browser: {media.hls_url} (HLS), {media.webrtc_url} (WebRTC);"
        f" user viewer, password {media.credentials.viewer}; the certificate is from"
        f" {pki_dir}/ca_chain.pem\n"
        f"events:  mosquitto_sub {tls('viewer')} -t 'camera/#' -v\n"
        f"command: mosquitto_pub {tls('operator')} -t camera/control/settings"
        " -m 'brightness 0.3'\n"
        f"control: CAMERA_AGENT_HOME={home} {Path(sys.executable).with_name('camera-ctl')}"
        " set brightness 0.3\n"
        f"files:   curl --cacert {pki_dir}/ca_chain.pem --cert {viewer}/cert.pem"
        f" --key {viewer}/key.pem {web.captures_url}\n"
        f"console: {web.url} (import {bundle} into the browser,"
        f" password in {bundle.with_name('bundle.p12.password')};"
        f" log: {console.log_path})\n"
        + (
            f"uploads: {store.endpoint}/{store.bucket}/cam/ (SeaweedFS, log: {store.log_path};"
            f" the admin's keys in {home / 's3-identities.json'})\n"
            if store is not None
            else ""
        ),
        flush=True,
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)], start_new_session=True
    )

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return agent.wait()
    except KeyboardInterrupt:
        return terminate_group(agent)
    finally:
        for server in reversed(servers):
            server.stop()


def upload_config_toml(store: ObjectStore, credentials: Path) -> str:
    """The agent's [upload] section for ``store``."""
    return (
        f'\n[upload]\nenabled = true\nendpoint = "{store.endpoint}"\n'
        f'bucket = "{store.bucket}"\ncredentials_file = "{credentials}"\n'
    )


def local_store(home: Path, port: int) -> ObjectStore:
    """`scripts/run --with-s3`'s store: its identities (the admin, and camera `cam` confined
    to `captures/cam/`) made on first run and kept, the camera's keys in the credentials file
    the agent reads."""
    saved = home / "s3-identities.json"
    if saved.exists():
        identities = [StoreIdentity.from_json(i) for i in json.loads(saved.read_text())]
    else:
        identities = [StoreIdentity.admin(), StoreIdentity.for_camera("cam")]
        saved.write_text(json.dumps([i.to_json() for i in identities], indent=2))
        saved.chmod(0o600)
    camera = next(i for i in identities if i.name == "camera-cam")
    credentials = home / "s3-credentials"
    credentials.write_text(camera.credentials_lines())
    credentials.chmod(0o600)
    return ObjectStore(home / "s3", identities=identities, s3_port=port)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
