"""The README documents every configuration key, error code and CLI command that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.__main__ import build_parser as build_agent_parser
from agent.config import AgentConfig
from agent.ctl.main import build_parser as build_ctl_parser
from agent.errors import ErrorCode
from agent.protocol import ACTION_PARSERS
from pki.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def config_keys() -> list[str]:
    keys = []
    for section, field in AgentConfig.model_fields.items():
        model = field.annotation
        assert model is not None
        keys += [f"{section}.{key}" for key in model.model_fields]
    return keys


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_is_documented(key: str) -> None:
    section, name = key.split(".")
    assert f"| `{key}` |" in README
    assert f"CAMERA_AGENT_{section.upper()}__{name.upper()}" in README


@pytest.mark.parametrize("code", [str(c) for c in ErrorCode])
def test_every_error_code_is_documented(code: str) -> None:
    assert f"| `{code}` |" in README


@pytest.mark.parametrize("action", list(ACTION_PARSERS))
def test_every_action_is_documented(action: str) -> None:
    assert f'"action": "{action}"' in README


def test_every_pki_command_is_documented() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"camera-pki {command} DIR" in README


def test_every_camera_ctl_command_is_documented() -> None:
    sub = next(a for a in build_ctl_parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"camera-ctl {command}" in README


def test_every_agent_command_is_documented() -> None:
    sub = next(a for a in build_agent_parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"camera-agent {command}" in README
    assert "camera-agent doctor --dump" in README


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    first_block = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[0] for line in first_block] == ["scripts/run", "scripts/test"]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci
