"""docs/asyncapi.yaml: valid for the AsyncAPI CLI (pinned by docs/package-lock.json), and the
contract check that holds every test's messages to it can fail."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from devstack import REPO

from tests.contract import problems_with

DOCS = REPO / "docs"


def asyncapi(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The pinned AsyncAPI CLI, its usage metrics off (a config file of its own saying so)."""
    cli = DOCS / "node_modules" / ".bin" / "asyncapi"
    if not cli.exists():
        pytest.fail("the AsyncAPI CLI is not installed: run scripts/bootstrap --all")
    metrics = tmp_path / "asyncapi-analytics.json"
    metrics.write_text(json.dumps(
        {"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "camera-agent-tests"}
    ))  # fmt: skip
    return subprocess.run(
        [str(cli), *args],
        env={**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(metrics),
             "SUPPRESS_NO_CONFIG_WARNING": "1", "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_document_is_valid_asyncapi(tmp_path: Path) -> None:
    done = asyncapi(tmp_path, "validate", str(DOCS / "asyncapi.yaml"), "--fail-severity", "warn")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "is valid" in done.stdout


def test_the_readme_rendering_of_the_document_works(tmp_path: Path) -> None:
    out = tmp_path / "html"
    template = DOCS / "node_modules" / "@asyncapi" / "html-template"
    done = asyncapi(tmp_path, "generate", "fromTemplate", str(DOCS / "asyncapi.yaml"),
                    str(template), "-o", str(out), "--force-write")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = (out / "index.html").read_text()
    assert "camera-agent MQTT contract" in page and "control/settings" in page


def test_the_contract_check_refuses_what_the_document_does_not_allow() -> None:
    good = {"ts": "2026-12-02T00:00:00.000Z", "camera": "cam", "event": "settings.applied",
            "ok": True, "id": "r1", "job": None, "message": "SUCCESS: x", "data": {}}  # fmt: skip
    assert problems_with("camera/status", json.dumps(good).encode()) == []
    assert problems_with("camera/a/status", json.dumps(good).encode()) == []  # a fleet's base
    missing = {k: v for k, v in good.items() if k != "ok"}
    assert problems_with("camera/status", json.dumps(missing).encode())
    refused = {**good, "event": "settings.rejected", "ok": False}  # a refusal without its error
    assert problems_with("camera/status", json.dumps(refused).encode())
    assert problems_with("camera/availability", b"maybe")
    assert problems_with("camera/availability", b"online") == []
    assert problems_with("camera/picture", b"\xff\xd8 any bytes") == []
    assert problems_with("elsewhere/topic", b"anything") == []  # not a channel of ours
