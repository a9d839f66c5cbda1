"""Topic names under the configurable base (default `camera`, the original system's topics)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import CommandError, ErrorCode


@dataclass(frozen=True)
class Topics:
    base: str

    @property
    def settings(self) -> str:
        return f"{self.base}/control/settings"

    @property
    def action(self) -> str:
        return f"{self.base}/control/action"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        """The JSON events when `BASE/status` carries plain text (mqtt.status_format = "text")."""
        return f"{self.base}/events"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def controls(self) -> str:
        return f"{self.base}/controls"

    @property
    def picture(self) -> str:
        """The latest picture's JPEG, retained (what MQTT image/camera entities read)."""
        return f"{self.base}/picture"

    @property
    def motion(self) -> str:
        """`ON` or `OFF`, retained: whether something moves in front of the camera."""
        return f"{self.base}/motion"

    @property
    def picture_info(self) -> str:
        return f"{self.base}/picture/info"

    @property
    def response_prefix(self) -> str:
        # The broker ACL (pki/acl.py) lets an agent publish replies here and nowhere else.
        return f"{self.base}/response/"

    def check_response_topic(self, topic: str) -> None:
        """Refuse reply topics the agent must not (or cannot, by ACL) publish to."""
        if (
            not topic.startswith(self.response_prefix)
            or len(topic) == len(self.response_prefix)
            or "+" in topic
            or "#" in topic
        ):
            raise CommandError(
                ErrorCode.INVALID_RESPONSE_TOPIC,
                f"response topic {topic[:100]!r} refused: use a topic under {self.response_prefix}"
                " (for example camera/response/<your client>)",
            )
