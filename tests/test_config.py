"""Configuration: TOML + environment, unknown keys and bad values refused with a clear message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[mqtt]\nhost = "broker"\nport = 1883\n[camera]\nbackend = "testsrc"\n')
    monkeypatch.setenv("CAMERA_AGENT_MQTT__PORT", "9883")
    loaded = load_config(config)
    assert (loaded.mqtt.host, loaded.mqtt.port, loaded.camera.backend) == (
        "broker",
        9883,
        "testsrc",
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[mqtt]\nhots = 'x'\n", "mqtt.hots: Extra inputs are not permitted"),
        ("[camerra]\nid = 'x'\n", "camerra: Extra inputs are not permitted"),
        ("[camera]\nbackend = 'webcam'\n", "camera.backend"),
        ("[mqtt]\nbase_topic = 'a/#'\n", "mqtt.base_topic"),
        ("[mqtt\n", "is not valid TOML"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(config)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[mqtt]\nca = "{tmp}/none.pem"\n[camera]\nbackend = "testsrc"\n',
            "none.pem does not exist",
        ),
        ("[mqtt]\nbogus = 1\n", "mqtt.bogus"),
    ],
)
def test_cli_exits_2_with_a_message(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml.replace("{tmp}", str(tmp_path)))
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_key_unknown_in_a_known_section_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAMERA_AGENT_MQTT__HOTS", "broker")
    with pytest.raises(ConfigError, match=r"mqtt\.hots: Extra inputs are not permitted"):
        load_config(None)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("CAMERA_AGENT_STORGE__MAX_BYTES",
         "CAMERA_AGENT_STORGE__MAX_BYTES names no section 'storge'"
         " (did you mean CAMERA_AGENT_STORAGE__?)"),
        ("CAMERA_AGENT_XYZZY__A", "names no section 'xyzzy'; sections: camera, "),
        ("CAMERA_AGENT_MQTT__", "CAMERA_AGENT_MQTT__ names no key of 'mqtt'"),
    ],
)  # fmt: skip
def test_an_environment_section_that_does_not_exist_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    """A misspelt section would otherwise be ignored: the agent would start without the limit."""
    monkeypatch.setenv(name, "1000")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None)


def test_the_cli_names_an_unknown_environment_section(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[camera]\nbackend = "testsrc"\n')
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "CAMERA_AGENT_STORGE__MAX_BYTES": "1000000"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "CAMERA_AGENT_STORGE__MAX_BYTES names no section 'storge'" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_values_are_converted_like_the_file_and_other_names_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAMERA_AGENT_HOME", "/somewhere")  # scripts/run's, not configuration
    monkeypatch.setenv("camera_agent_stream__autostart", "false")
    monkeypatch.setenv("CAMERA_AGENT_JOBS__MAX_RECORD_S", "12.5")
    loaded = load_config(None)
    assert loaded.stream.autostart is False and loaded.jobs.max_record_s == 12.5
    monkeypatch.setenv("CAMERA_AGENT_MQTT__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"mqtt\.port: Input should be a valid integer"):
        load_config(None)
