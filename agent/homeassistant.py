"""Home Assistant MQTT discovery: the camera, its controls, buttons, picture and sensors appear in
Home Assistant by themselves.

Per-entity discovery (Home Assistant 2023.7 and newer): one retained config per entity under
`<prefix>/<component>/<node>/<object>/config`, where the node is the agent's MQTT identity (the
broker's ACL lets an identity write only its own node's configs). Commands go through the
agent's own contract (JSON on `BASE/control/settings` and `BASE/control/action`, with an `id`),
and states are read from `BASE/state` and `BASE/controls` with templates: no second protocol.

The configs published last are remembered in `state_dir/discovery.json`, so that the configs of
controls that no longer exist (another camera, another backend) are removed (an empty retained
payload) at the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.atomicfile import write_atomic
from agent.camera.base import ControlDescriptor, ControlType
from agent.messaging import Delivery, Publisher
from agent.mqtt.topics import Topics

log = logging.getLogger(__name__)

# A range with at most this many steps is a slider; a larger one a box to type into.
SLIDER_MAX_STEPS = 1000
COMMAND_ID = "ha-{{ now().timestamp() | round(3) }}"


def birth_topic(prefix: str) -> str:
    """Home Assistant says `online` here when it (re)starts: every config is sent again."""
    return f"{prefix}/status"


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


class Discovery:
    """Builds and publishes the discovery configs of one camera."""

    def __init__(
        self,
        prefix: str,
        node: str,
        camera_id: str,
        topics: Topics,
        publisher: Publisher,
        record_s: float,
        memory: Path,
        configuration_url: str | None = None,
    ) -> None:
        """``node``: the agent's MQTT identity; ``memory``: where the published topics are kept."""
        self.prefix = prefix
        self._node = node
        self._camera_id = camera_id
        self._topics = topics
        self._publisher = publisher
        self._record_s = record_s
        self._memory = memory
        self._configuration_url = configuration_url

    @property
    def birth_topic(self) -> str:
        return birth_topic(self.prefix)

    def _topic(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self._node}/{object_id}/config"

    def device(self, info: dict[str, Any]) -> dict[str, Any]:
        device: dict[str, Any] = {
            "identifiers": [f"camera-agent-{self._node}"],
            "name": f"Camera {self._camera_id}",
            "manufacturer": "camera-agent",
            "model": str(info.get("model") or info.get("backend") or "camera"),
            "sw_version": __version__,
        }
        if self._configuration_url:
            device["configuration_url"] = self._configuration_url
        return device

    def configs(
        self, descriptors: Sequence[ControlDescriptor], info: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        """Every entity's config, by discovery topic."""
        device = self.device(info)
        base = self._topics
        availability = [{"topic": base.availability}]

        def entity(object_id: str, name: str, **fields: Any) -> dict[str, Any]:
            return {
                "name": name,
                "unique_id": f"{self._node}_{object_id}",
                "object_id": f"{self._camera_id}_{object_id}",
                "device": device,
                "availability": availability,
                **fields,
            }

        out: dict[str, dict[str, Any]] = {}
        for descriptor in descriptors:
            made = self._control(descriptor, entity)
            if made is not None:
                component, config = made
                out[self._topic(component, descriptor.name)] = config

        def press(object_id: str, name: str, action: dict[str, Any], icon: str) -> None:
            payload = json.dumps({"action": action.pop("action"), **action})
            out[self._topic("button", object_id)] = entity(
                object_id, name, command_topic=base.action, payload_press=payload, icon=icon
            )

        press("picture", "Take picture", {"action": "picture"}, "mdi:camera")
        press(
            "record",
            f"Record {self._record_s:g} s",
            {"action": "record", "duration": self._record_s},
            "mdi:record-rec",
        )
        press("stream_start", "Start stream", {"action": "stream", "op": "start"}, "mdi:play")
        press("stream_stop", "Stop stream", {"action": "stream", "op": "stop"}, "mdi:stop")
        out[self._topic("image", "picture")] = entity(
            "picture", "Latest picture", image_topic=base.picture, content_type="image/jpeg"
        )
        state = {"state_topic": base.state}
        out[self._topic("sensor", "stream_state")] = entity(
            "stream_state", "Stream", **state, value_template="{{ value_json.stream.state }}",
            icon="mdi:video",
        )  # fmt: skip
        out[self._topic("binary_sensor", "stream_online")] = entity(
            "stream_online", "Stream online", **state, device_class="connectivity",
            value_template="{{ 'ON' if value_json.stream.state == 'online' else 'OFF' }}",
        )  # fmt: skip
        out[self._topic("binary_sensor", "motion")] = entity(
            "motion", "Motion", state_topic=base.motion, device_class="motion",
            payload_on="ON", payload_off="OFF",
        )  # fmt: skip
        out[self._topic("sensor", "last_job")] = entity(
            "last_job", "Last job", **state, icon="mdi:briefcase-check",
            value_template="{% set jobs = value_json.jobs %}"
            "{{ (jobs[-1].kind ~ ' ' ~ jobs[-1].state) if jobs else 'none' }}",
            json_attributes_topic=base.state,
            json_attributes_template="{% set jobs = value_json.jobs %}"
            "{{ {'job': jobs[-1].id, 'result': jobs[-1].result, 'error': jobs[-1].error}"
            " | tojson if jobs else '{}' }}",
        )  # fmt: skip
        out[self._topic("sensor", "disk_free")] = entity(
            "disk_free", "Disk free", **state, device_class="data_size",
            unit_of_measurement="MiB", state_class="measurement", entity_category="diagnostic",
            value_template="{{ (value_json.storage.free_bytes / 1048576) | round(0)"
            " if value_json.storage else None }}",
        )  # fmt: skip
        return out

    def _control(
        self, descriptor: ControlDescriptor, entity: Any
    ) -> tuple[str, dict[str, Any]] | None:
        """The entity of one control: number, select or switch (pairs and read-only controls
        have none: Home Assistant has no entity that sets two numbers at once)."""
        if descriptor.read_only or descriptor.type is ControlType.PAIR:
            return None
        name = descriptor.name
        base = self._topics
        label = _title(name)
        extra: dict[str, Any] = {}
        if descriptor.restarts_stream:
            # Changing it restarts the stream for a moment: kept out of the main controls.
            label += " (restarts stream)"
            extra["entity_category"] = "config"
        # Unavailable while the camera says it is inactive (exposure while auto exposure runs).
        availability = [
            {"topic": base.availability},
            {
                "topic": base.controls,
                "value_template": "{% set c = value_json.controls | selectattr('name', 'eq', '"
                + name
                + "') | first %}{{ 'offline' if c is undefined or c.inactive"
                " else 'online' }}",
            },
        ]
        common = {
            "command_topic": base.settings,
            "state_topic": base.state,
            "availability": availability,
            "availability_mode": "all",
            **extra,
        }
        value = f"value_json.controls.{name}"
        if descriptor.type is ControlType.BOOL:
            return "switch", entity(
                name, label, **common,
                payload_on=json.dumps({"set": {name: True}}),
                payload_off=json.dumps({"set": {name: False}}),
                state_on="ON", state_off="OFF",
                value_template=f"{{{{ 'ON' if {value} else 'OFF' }}}}",
            )  # fmt: skip
        template = '{"id": "' + COMMAND_ID + '", "set": {"' + name + '": {{ value | tojson }}}}'
        if descriptor.type is ControlType.MENU:
            labels = {str(o.value): o.label for o in descriptor.options}
            return "select", entity(
                name, label, **common, options=list(labels.values()),
                command_template=template,
                value_template="{% set labels = " + json.dumps(labels) + " %}"
                f"{{{{ labels[{value} | string] }}}}",
            )  # fmt: skip
        if descriptor.minimum is None or descriptor.maximum is None:
            return None
        step = descriptor.step or (1 if descriptor.type is ControlType.INT else 0.01)
        steps = (float(descriptor.maximum) - float(descriptor.minimum)) / float(step)
        number = entity(
            name, label, **common, command_template=template,
            value_template=f"{{{{ {value} }}}}",
            min=descriptor.minimum, max=descriptor.maximum, step=step,
            mode="slider" if steps <= SLIDER_MAX_STEPS else "box",
        )  # fmt: skip
        if descriptor.unit:
            number["unit_of_measurement"] = descriptor.unit
        return "number", number

    async def publish(self, descriptors: Sequence[ControlDescriptor], info: dict[str, Any]) -> int:
        """Every config (retained), then an empty retained payload for each config published
        before that no longer exists. Returns how many configs were published."""
        configs = self.configs(descriptors, info)
        for topic, config in configs.items():
            await self._publisher.publish(
                topic, json.dumps(config).encode(), retain=True, delivery=Delivery.EVENT
            )
        remembered = await asyncio.to_thread(self._remembered)
        for gone in sorted(set(remembered) - set(configs)):
            log.info("removing the discovery config %s (no such entity any more)", gone)
            await self._publisher.publish(gone, b"", retain=True, delivery=Delivery.EVENT)
        try:
            # In a worker thread: the write syncs to disk, which the event loop must not wait on.
            await asyncio.to_thread(
                write_atomic, self._memory, json.dumps(sorted(configs)).encode()
            )
        except OSError as err:
            log.warning("cannot remember the discovery configs in %s: %s", self._memory, err)
        return len(configs)

    def _remembered(self) -> list[str]:
        """The topics published last time (blocking: a worker thread)."""
        try:
            topics = json.loads(self._memory.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(topics, list):
            return []
        prefix = f"{self.prefix}/"
        # Only this node's configs: a hand-edited file must not make the agent clear others.
        return [
            t for t in topics
            if isinstance(t, str) and t.startswith(prefix) and f"/{self._node}/" in t
        ]  # fmt: skip
