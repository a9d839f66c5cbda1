"""Configuration: a TOML file (`camera-agent run --config FILE`) plus environment variables.

Every key can also be set as `CAMERA_AGENT_<SECTION>__<KEY>` (for example
`CAMERA_AGENT_MQTT__HOST=broker`); the environment wins over the file. Unknown keys are errors.

The environment is read here rather than by pydantic-settings: that library costs an idle agent
22 MiB of its memory (its CLI, cloud and dotenv sources load with it), a fifth of a Raspberry Pi
Zero's share per camera in a fleet, for what is a dozen lines below.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.errors import ConfigError

PKI = Path("/etc/camera-agent/pki")
ENV_PREFIX = "CAMERA_AGENT_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


ConfigT = TypeVar("ConfigT", bound=Section)


class MqttSettings(Section):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(8883, ge=1, le=65535, description="broker mTLS port")
    ca: Path = Field(
        PKI / "ca_chain.pem", description="CA chain that signed the broker certificate"
    )
    cert: Path = Field(PKI / "clients/agent/cert.pem", description="the agent's client certificate")
    key: Path = Field(PKI / "clients/agent/key.pem", description="the agent's private key")
    base_topic: str = Field(
        "camera", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", description="topic base BASE"
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    session_expiry_s: int = Field(
        3600, ge=0, description="how long the broker queues commands while the agent is away"
    )
    tcp_nodelay: bool = Field(True, description="disable Nagle's algorithm on the broker socket")
    reconnect_min_s: float = Field(0.5, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, description="reconnect delay cap")
    max_payload_bytes: int = Field(
        65536, ge=256, le=262144, description="larger commands are refused (payload_too_large)"
    )
    max_picture_bytes: int = Field(
        256 * 1024,
        ge=16 * 1024,
        le=1024 * 1024,
        description="largest JPEG published on BASE/picture; a larger picture is sent downscaled"
        " (keep it under the broker's max_packet_size)",
    )
    status_format: Literal["json", "text"] = Field(
        "json",
        description="`text`: BASE/status carries the plain message strings (the original"
        " front end's contract) and the JSON events go to BASE/events",
    )
    outbox_limit: int = Field(
        1000,
        ge=10,
        description="messages kept for the broker while it is away; past it job.progress and"
        " stream events are dropped (answers and job ends never)",
    )


class CameraSettings(Section):
    id: str = Field("cam", pattern=r"^[a-z0-9][a-z0-9_-]*$", description="camera id in events")
    backend: Literal["auto", "testsrc", "picamera2", "v4l2"] = Field(
        "auto", description="camera stack; auto picks the first camera found, else testsrc"
    )
    device: str | None = Field(None, description="V4L2 device path or libcamera camera index")
    width: int = Field(1280, ge=160, le=3840, description="frame width")
    height: int = Field(720, ge=120, le=2160, description="frame height")
    fps: int = Field(30, ge=1, le=60, description="frames per second")


class StreamSettings(Section):
    url: str = Field(
        "rtsp://127.0.0.1:8554/cam",
        pattern=r"^rtsp://[^/@\s]+/[A-Za-z0-9_.~-]+$",
        description="MediaMTX path the agent publishes (no credentials in it)",
    )
    record_path: str = Field(
        "cam_recorded",
        pattern=r"^([A-Za-z0-9_.~-]+)?$",
        description="MediaMTX path that is recorded for `record` jobs, published beside the"
        " viewers' path; empty: record the viewers' path itself (no alwaysAvailable there)",
    )
    username: str = Field("agent", description="MediaMTX publish user")
    password: SecretStr = Field(SecretStr(""), description="MediaMTX publish password")
    api_url: str = Field(
        "http://127.0.0.1:9997", description="MediaMTX control API, to confirm the stream is live"
    )
    playback_url: str = Field(
        "http://127.0.0.1:9996", description="MediaMTX playback server, where recordings are cut"
    )
    autostart: bool = Field(True, description="start streaming at start-up (else `stream start`)")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="transport of the pusher")
    restart_min_s: float = Field(0.5, gt=0, description="first delay before restarting a pusher")
    restart_max_s: float = Field(30.0, gt=0, description="restart delay cap")
    start_timeout_s: float = Field(10.0, gt=0, description="time for a pusher to go live")
    stall_timeout_s: float = Field(
        5.0, gt=0, description="no new data at MediaMTX for this long restarts the pusher"
    )


class StorageSettings(Section):
    captures_dir: Path = Field(
        Path("/var/lib/camera-agent/captures"), description="pictures and recordings"
    )
    state_dir: Path = Field(Path("/var/lib/camera-agent/state"), description="persistent state")
    max_bytes: int = Field(
        0, ge=0, description="cap on the captures directory, oldest removed first; 0: none"
    )
    max_age_days: float = Field(
        0.0, ge=0, description="captures older than this are removed; 0: kept for ever"
    )
    min_free_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        description="free space kept on the captures filesystem, oldest captures removed first;"
        " below it jobs that write are refused",
    )
    public_url: str = Field(
        "",
        pattern=r"^(https?://[^\s?#]+/)?$",
        description="where nginx serves the captures directory, ending in `/`: the `url` of"
        " results, picture info and listings; empty: https://<host name>:8443/captures/",
    )

    @field_validator("public_url")
    @classmethod
    def _default_public_url(cls, value: str) -> str:
        # The host's own name, which `camera-pki init` puts in the server certificate.
        return value or f"https://{socket.gethostname().lower()}:8443/captures/"


class JobSettings(Section):
    picture_limit: int = Field(4, ge=1, le=32, description="pictures taken at the same time")
    record_limit: int = Field(1, ge=1, le=8, description="recordings at the same time")
    max_record_s: float = Field(
        3000.0, gt=0, description="longest recording; `record` without a duration stops here"
    )
    max_preroll_s: float = Field(30.0, ge=0, description="longest pre-roll a recording may ask")
    timelapse_limit: int = Field(1, ge=1, le=8, description="timelapse series at the same time")
    timelapse_min_interval_s: float = Field(
        1.0, gt=0, description="shortest interval a timelapse may ask"
    )


class HomeAssistantSettings(Section):
    discovery: bool = Field(
        True, description="publish Home Assistant MQTT discovery configs for this camera"
    )
    prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="Home Assistant's discovery prefix (its MQTT integration's setting)",
    )
    record_button_s: float = Field(
        10.0, gt=0, description="length of the recording the `Record` button starts"
    )


Point = tuple[float, float]


def _check_polygon(polygon: list[Point]) -> list[Point]:
    if not 3 <= len(polygon) <= 64:
        raise ValueError(f"a polygon has 3 to 64 points, not {len(polygon)}")
    for x, y in polygon:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(
                f"point ({x:g}, {y:g}) is outside the picture: coordinates are normalised,"
                " (0, 0) top left to (1, 1) bottom right"
            )
    return polygon


class MotionZone(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="the zone's name in events")
    polygon: list[Point] = Field(description="vertices, normalised (0..1, top left origin)")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, value: list[Point]) -> list[Point]:
        return _check_polygon(value)


class MotionRegions(Section):
    """Where motion is looked for: settable over MQTT too (the `motion` action)."""

    mask: list[list[Point]] = Field(
        default_factory=list,
        description="polygons never watched (normalised), besides the camera's own overlays"
        " (the test pattern's clock strip)",
    )
    zones: list[MotionZone] = Field(
        default_factory=list, description="when given, only these are watched; events name one"
    )

    @field_validator("mask")
    @classmethod
    def _mask(cls, value: list[list[Point]]) -> list[list[Point]]:
        return [_check_polygon(polygon) for polygon in value]

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: list[MotionZone]) -> list[MotionZone]:
        names = [zone.name for zone in value]
        if len(set(names)) != len(names):
            raise ValueError("zone names must differ")
        return value


class MotionSettings(MotionRegions):
    enabled: bool = Field(
        True, description="analyse the picture for motion (the `motion` control switches it)"
    )
    fps: float = Field(5.0, ge=0.5, le=15.0, description="frames analysed per second")
    threshold: int = Field(
        25, ge=1, le=255, description="grey levels a pixel must change by to count as moving"
    )
    min_area: float = Field(
        0.003, gt=0.0, lt=1.0, description="share of the watched picture that must move"
    )
    off_delay_s: float = Field(
        10.0, ge=0.0, le=3600.0, description="stillness after the last motion before OFF"
    )
    snapshot: bool = Field(False, description="a picture at each motion.started")
    record: bool = Field(False, description="a clip of each motion event")
    preroll_s: float = Field(3.0, ge=0.0, le=30.0, description="clip time before the motion")
    postroll_s: float = Field(5.0, ge=0.0, le=300.0, description="clip time after the motion")
    max_clip_s: float = Field(
        120.0, ge=5.0, le=3000.0, description="longest clip; longer motion starts a new one"
    )


UploadKind = Literal["pictures", "recordings", "timelapse", "motion"]
_THEN = re.compile(r"^(keep|delete_after_days\s+(\d+(\.\d+)?))$")


class UploadSettings(Section):
    """Captures copied to an S3-compatible object store (AWS S3, SeaweedFS, Ceph RGW, Garage,
    Backblaze B2, Wasabi), through a journal that survives a kill (see agent/upload.py)."""

    enabled: bool = Field(False, description="upload finished captures to the object store")
    endpoint: str = Field(
        "",
        pattern=r"^(https?://[^\s/?#]+/?)?$",
        description="the store's S3 endpoint (`https://s3.eu-west-1.amazonaws.com`,"
        " `http://127.0.0.1:8333`); empty: AWS S3 of `region`",
    )
    region: str = Field(
        "us-east-1", pattern=r"^[a-z0-9-]{1,40}$", description="the store's region (signing)"
    )
    bucket: str = Field(
        "", pattern=r"^([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])?$", description="the bucket"
    )
    prefix: str = Field(
        "{camera}/{kind}/{date}/",
        pattern=r"^[A-Za-z0-9_.{}/=-]*$",
        description="key prefix: `{camera}` (camera.id), `{kind}` (pictures, recordings,"
        " timelapse, motion), `{date}` (the capture's UTC day, YYYY-MM-DD)",
    )
    credentials_file: Path | None = Field(
        None,
        description="a file of `AWS_ACCESS_KEY_ID=...` and `AWS_SECRET_ACCESS_KEY=...` lines;"
        " unset: those two environment variables",
    )
    ca_file: Path | None = Field(
        None,
        description="CA certificate(s) to trust for an https endpoint besides the system's (a"
        " store behind a private CA: this PKI's `ca_chain.pem`, a self-hosted SeaweedFS)",
    )
    kinds: list[UploadKind] = Field(
        ["pictures", "recordings", "timelapse", "motion"],
        description="which captures go up: pictures, recordings, timelapse (the assembled"
        " video), motion (motion clips)",
    )
    then: str = Field(
        "keep",
        description="after the store confirmed an upload: `keep` the local file (retention"
        " removes it in time), or `delete_after_days N` (N = 0: at once)",
    )
    max_kbit_s: int = Field(
        0, ge=0, description="bandwidth cap in kbit/s for cellular sites; 0: none"
    )
    retry_min_s: float = Field(2.0, gt=0, description="first pause after a failed upload")
    retry_max_s: float = Field(300.0, gt=0, description="longest pause between retries")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        try:
            value.format(camera="c", kind="k", date="d")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"prefix {value!r}: only {{camera}}, {{kind}} and {{date}} may be used ({err})"
            ) from None
        if value.startswith("/") or "//" in value or ".." in value:
            raise ValueError(f"prefix {value!r}: no leading '/', '//' or '..'")
        return value

    @field_validator("then")
    @classmethod
    def _then(cls, value: str) -> str:
        if _THEN.match(value.strip()) is None:
            raise ValueError(f"{value!r}: `keep` or `delete_after_days N` (N days, 0: at once)")
        return " ".join(value.split())

    @model_validator(mode="after")
    def _needs_a_bucket(self) -> UploadSettings:
        if self.enabled and not self.bucket:
            raise ValueError("upload.enabled needs upload.bucket")
        return self

    @property
    def delete_after_days(self) -> float | None:
        """None: keep; else the days after the confirmed upload when the file goes."""
        match = _THEN.match(self.then)
        return float(match.group(2)) if match and match.group(2) else None


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")


class AgentConfig(Section):
    mqtt: MqttSettings = MqttSettings()
    camera: CameraSettings = CameraSettings()
    stream: StreamSettings = StreamSettings()
    storage: StorageSettings = StorageSettings()
    jobs: JobSettings = JobSettings()
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    motion: MotionSettings = MotionSettings()
    upload: UploadSettings = UploadSettings()
    log: LogSettings = LogSettings()


def environment_overrides(
    environ: Mapping[str, str],
    model: type[Section] = AgentConfig,
    prefix: str = ENV_PREFIX,
) -> dict[str, dict[str, str]]:
    """`CAMERA_AGENT_<SECTION>__<KEY>` variables (``prefix`` for another program built of
    sections, such as the console's `CAMERA_CONSOLE_`) as {section: {key: value}}, names
    lowercased.

    Values stay strings; pydantic converts them as it does TOML values ("9883" to a port). A
    variable naming an unknown key of a known section comes through, so it is refused like a
    misspelt key in the file; one naming an unknown section (`CAMERA_AGENT_STORGE__MAX_BYTES`)
    is a ConfigError here, since it would otherwise be ignored. Variables without the `__`
    (CAMERA_AGENT_HOME, used by scripts/run) are not configuration and are left alone.
    """
    overrides: dict[str, dict[str, str]] = {}
    for name, value in sorted(environ.items()):
        if not name.upper().startswith(prefix):
            continue
        section, sep, key = name[len(prefix) :].lower().partition("__")
        if not sep:
            continue
        if section not in model.model_fields:
            known = sorted(model.model_fields)
            close = difflib.get_close_matches(section, known, n=1)
            hint = f" (did you mean {prefix}{close[0].upper()}__?)" if close else ""
            raise ConfigError(
                f"invalid configuration: {name} names no section {section!r}{hint};"
                f" sections: {', '.join(known)}"
            )
        if not key:
            raise ConfigError(f"invalid configuration: {name} names no key of {section!r}")
        overrides.setdefault(section, {})[key] = value
    return overrides


def _environment_value(value: str) -> Any:
    """Lists (polygons, zones) come from the environment as JSON; everything else as text."""
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError as err:
            raise ConfigError(
                f"invalid configuration: {value[:40]!r} is not valid JSON: {err}"
            ) from None
    return value


def load_config(path: Path | None) -> AgentConfig:
    """Read the TOML file (if any) and the environment; ConfigError says what is wrong."""
    return load_sections(path, AgentConfig, ENV_PREFIX)


def load_sections(path: Path | None, model: type[ConfigT], prefix: str) -> ConfigT:
    """A config of ``model`` from the TOML file (if any) and the ``prefix`` environment."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from err
    for section, texts in environment_overrides(os.environ, model, prefix).items():
        values = {key: _environment_value(text) for key, text in texts.items()}
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"invalid configuration: {section}: must be a table")
        data[section] = {**data.get(section, {}), **values}
    try:
        return model(**data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from err
