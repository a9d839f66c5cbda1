"""The console service's configuration: a TOML file (`camera-console run --config FILE`) and
`CAMERA_CONSOLE_<SECTION>__<KEY>` variables, read by the agent's loader (same rules: the
environment wins, unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.config import LogSettings, MqttSettings, Section, load_sections

ENV_PREFIX = "CAMERA_CONSOLE_"
PKI = Path("/etc/camera-agent/pki")


class ConsoleMqttSettings(MqttSettings):
    cert: Path = Field(PKI / "clients/console/cert.pem", description="the console's certificate")
    key: Path = Field(PKI / "clients/console/key.pem", description="the console's private key")


class ConsoleSettings(Section):
    socket: Path = Field(
        Path("/run/camera-console/console.sock"),
        description="Unix socket nginx proxies the console's WebSocket and API to; only nginx"
        " (the one that checked the browser's certificate) should be able to open it",
    )
    answer_timeout_s: float = Field(
        30.0, gt=0, description="how long a command waits for the camera's answer"
    )
    events_kept: int = Field(
        100, ge=10, le=1000, description="events kept per camera for a page that opens"
    )
    queue_limit: int = Field(
        1000,
        ge=50,
        description="messages waiting for a slow browser; past it the page is disconnected"
        " (it reconnects and starts from a fresh snapshot)",
    )


class ConsoleConfig(Section):
    mqtt: ConsoleMqttSettings = ConsoleMqttSettings()
    console: ConsoleSettings = ConsoleSettings()
    log: LogSettings = LogSettings()


def load_console_config(path: Path | None) -> ConsoleConfig:
    return load_sections(path, ConsoleConfig, ENV_PREFIX)
