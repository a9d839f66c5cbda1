"""Validates discovery configs with Home Assistant's own code; runs in the pinned Home Assistant
venv (tests/home_assistant/requirements.txt), not in ours.

stdin: {"configs": {topic: config}, "state": BASE/state, "controls": BASE/controls,
        "commands": {topic: a value to render the command template with}}
stdout: {"problems": [...], "rendered": {topic: {"value": ..., "availability": [...],
         "command": ...}}}

Each config goes through its platform's DISCOVERY_SCHEMA (which drops keys it does not know:
a dropped key is a problem too), and its templates are rendered by Home Assistant's template
engine against the given state, as its MQTT entities would.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile
from typing import Any

# Importing the mqtt platforms first runs into an import cycle of Home Assistant's own
# (websocket_api <-> persistent_notification); the entity platform helper breaks it.
import homeassistant.helpers.entity_platform  # noqa: F401
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template


def render(hass: Any, template: str | None, payload: Any) -> Any:
    if template is None:
        return None
    return Template(template, hass).async_render_with_possible_json_value(json.dumps(payload))


async def main() -> None:
    request = json.load(sys.stdin)
    problems: list[str] = []
    rendered: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        for topic, config in request["configs"].items():
            component = topic.split("/")[1]
            platform = importlib.import_module(f"homeassistant.components.mqtt.{component}")
            try:
                validated = platform.DISCOVERY_SCHEMA(dict(config))
            except Exception as err:  # voluptuous raises its own kinds
                problems.append(f"{topic}: {err}")
                continue
            dropped = sorted(set(config) - set(validated))
            if dropped:
                problems.append(f"{topic}: keys Home Assistant does not know: {dropped}")
            out: dict[str, Any] = {
                "value": render(hass, config.get("value_template"), request["state"]),
                "availability": [
                    render(hass, a.get("value_template"), request["controls"])
                    for a in config.get("availability", [])
                    if a.get("value_template")
                ],
            }
            if "command_template" in config and topic in request["commands"]:
                out["command"] = Template(config["command_template"], hass).async_render(
                    {"value": request["commands"][topic]}, parse_result=False
                )
            if "json_attributes_template" in config:
                out["attributes"] = render(
                    hass, config["json_attributes_template"], request["state"]
                )
            rendered[topic] = out
        await hass.async_stop(force=True)
    json.dump({"problems": problems, "rendered": rendered}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
