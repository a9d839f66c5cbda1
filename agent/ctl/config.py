"""Where camera-ctl finds the broker and its certificate.

In order: `--config FILE` (TOML: host, port, ca, cert, key, base_topic), then `CAMERA_CTL_HOST`,
`CAMERA_CTL_PORT`, `CAMERA_CTL_CA`, `CAMERA_CTL_CERT`, `CAMERA_CTL_KEY` and
`CAMERA_CTL_BASE_TOPIC`, each overriding the file's key. With neither, the `scripts/run` home
($CAMERA_AGENT_HOME, else ./var): the broker its `agent.toml` names and the `operator`
certificate of its PKI.

`base_topic` is the root of the cameras' topics (`camera`): a camera given with `--camera ID` is
at `<base_topic>/ID`, and without one `<base_topic>` itself is the camera (a single-camera
system such as `scripts/run`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "CAMERA_CTL_"
TOPIC = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
CAMERA_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")


class CtlConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class CtlConfig:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    base_topic: str = "camera"

    def camera_base(self, camera: str | None) -> str:
        if camera is None:
            return self.base_topic
        if not CAMERA_ID.fullmatch(camera):
            raise CtlConfigError(f"--camera {camera!r}: a camera id is a-z, 0-9, '_' and '-'")
        return f"{self.base_topic}/{camera}"


def _from_mapping(values: Mapping[str, Any], where: str, base: CtlConfig | None) -> CtlConfig:
    known = {f.name for f in fields(CtlConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CtlConfigError(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}"
        )
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        if name == "port":
            try:
                port = int(raw)
            except (TypeError, ValueError):
                raise CtlConfigError(f"{where}: port {raw!r} is not a number") from None
            if not 0 < port < 65536:
                raise CtlConfigError(f"{where}: port {port} is not 1-65535")
            parsed[name] = port
        elif name in ("ca", "cert", "key"):
            parsed[name] = Path(str(raw)).expanduser()
        else:
            parsed[name] = str(raw)
    if "base_topic" in parsed and not TOPIC.fullmatch(parsed["base_topic"]):
        raise CtlConfigError(f"{where}: base_topic {parsed['base_topic']!r} is not a plain topic")
    if base is not None:
        return replace(base, **parsed)
    missing = sorted({"host", "port", "ca", "cert", "key"} - set(parsed))
    if missing:
        raise CtlConfigError(f"{where}: {', '.join(missing)} missing")
    return CtlConfig(**parsed)


def _from_run_home(home: Path) -> CtlConfig:
    agent_toml = home / "agent.toml"
    try:
        mqtt = tomllib.loads(agent_toml.read_text()).get("mqtt", {})
    except FileNotFoundError:
        raise CtlConfigError(
            f"no --config, no CAMERA_CTL_* variables, and no {agent_toml} (start the system with"
            " scripts/run, or set CAMERA_AGENT_HOME to its directory)"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CtlConfigError(f"cannot read {agent_toml}: {err}") from err
    if not isinstance(mqtt, dict):
        raise CtlConfigError(f"{agent_toml}: [mqtt] is not a table")
    operator = home / "pki" / "clients" / "operator"
    # Through the same checks as a --config file: a hand-edited agent.toml gets a clear error.
    return _from_mapping(
        {
            "host": mqtt.get("host", "127.0.0.1"),
            "port": mqtt.get("port", 8883),
            "ca": mqtt.get("ca", home / "pki" / "ca_chain.pem"),
            "cert": operator / "cert.pem",
            "key": operator / "key.pem",
            # The agent's base is the camera itself; camera-ctl's is the root ids hang from.
            "base_topic": mqtt.get("base_topic", "camera"),
        },
        str(agent_toml),
        None,
    )


def load_ctl_config(
    path: Path | None, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> CtlConfig:
    environ = os.environ if environ is None else environ
    from_env = {
        name[len(ENV_PREFIX) :].lower(): value
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX)
    }
    config: CtlConfig | None = None
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as err:
            raise CtlConfigError(f"cannot read {path}: {err.strerror}") from err
        except tomllib.TOMLDecodeError as err:
            raise CtlConfigError(f"{path} is not valid TOML: {err}") from err
        config = _from_mapping(data, str(path), None)
    elif not from_env:
        home = Path(environ.get("CAMERA_AGENT_HOME") or (cwd or Path.cwd()) / "var")
        config = _from_run_home(home)
    if from_env:
        config = _from_mapping(from_env, "CAMERA_CTL_* variables", config)
    if config is None:  # unreachable: a file, the environment or the run home gave one
        raise CtlConfigError("no configuration")
    for what, file in (("CA chain", config.ca), ("certificate", config.cert), ("key", config.key)):
        if not file.is_file():
            raise CtlConfigError(f"{what} {file} does not exist")
    return config
