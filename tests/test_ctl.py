"""camera-ctl, run as its console script against the real broker, agent, MediaMTX and nginx:
what it prints, the files it fetches, its exit status, and what it does when the broker restarts
under it or nginx is gone."""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from devstack import Broker, WebServer

from agent.ctl.config import CtlConfigError, load_ctl_config
from tests.support import AgentProcess, Probe, is_online

CAMERA_CTL = Path(sys.executable).with_name("camera-ctl")


def ctl_env(broker: Broker, identity: str = "cli") -> dict[str, str]:
    client = broker.pki_dir / "clients" / identity
    return {
        "CAMERA_CTL_HOST": "127.0.0.1",
        "CAMERA_CTL_PORT": str(broker.port),
        "CAMERA_CTL_CA": str(broker.pki_dir / "ca_chain.pem"),
        "CAMERA_CTL_CERT": str(client / "cert.pem"),
        "CAMERA_CTL_KEY": str(client / "key.pem"),
        "PATH": "/usr/bin:/bin",
    }


def ctl(
    broker: Broker, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CAMERA_CTL), *args], env=env or ctl_env(broker),
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_set_prints_the_answer_and_changes_the_camera(
    agent: AgentProcess, operator: Probe, broker: Broker
) -> None:
    done = ctl(broker, "set", "brightness", "0.3", "contrast", "1.2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SUCCESS: brightness set to 0.3, contrast set to 1.2"
    answer = operator.wait_event(event="settings.applied")
    assert answer["id"].startswith("ctl-") and answer["data"]["applied"] == {
        "brightness": 0.3,
        "contrast": 1.2,
    }
    shown = ctl(broker, "controls")
    assert shown.returncode == 0
    assert any(line.startswith("brightness = 0.3 [") for line in shown.stdout.splitlines())


@pytest.mark.parametrize(
    ("args", "code", "status"),
    [
        (["set", "brightness", "7"], "error out_of_range:", 1),
        (["set", "sharpness", "1"], "error unknown_control:", 1),
        (["trim", "nothing.mp4", "0", "1"], "error not_found:", 1),
        (["set", "brightness"], "camera-ctl: set takes NAME VALUE pairs", 2),
    ],
)
def test_errors_print_code_and_detail_and_exit_non_zero(
    agent: AgentProcess, broker: Broker, args: list[str], code: str, status: int
) -> None:
    done = ctl(broker, *args)
    assert done.returncode == status, (done.stdout, done.stderr)
    assert done.stderr.startswith(code), done.stderr


def test_a_camera_that_does_not_answer_is_a_timeout(agent: AgentProcess, broker: Broker) -> None:
    done = ctl(broker, "--camera", "nowhere", "--timeout", "1", "set", "brightness", "0.2")
    assert done.returncode == 1
    assert done.stderr.startswith("error timeout: no answer in time")


def test_picture_download_is_the_agents_file(
    served_agent: AgentProcess, broker: Broker, tmp_path: Path
) -> None:
    target = tmp_path / "downloads"
    done = ctl(broker, "picture", "--download", str(target))
    assert done.returncode == 0, done.stderr
    saved = list(target.iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".jpg", saved
    original = tmp_path / "agent" / "captures" / saved[0].name
    assert hashlib.sha256(saved[0].read_bytes()).digest() == (
        hashlib.sha256(original.read_bytes()).digest()
    )
    assert f"saved {saved[0]}" in done.stdout
    assert "SUCCESS" in done.stdout and "1280x720" in done.stdout


def test_record_wait_ends_with_the_file_and_json_lines_parse(
    served_agent: AgentProcess, broker: Broker, tmp_path: Path
) -> None:
    done = ctl(broker, "--json", "record", "2", "--wait", "--download", str(tmp_path / "d"))
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.splitlines()[0])
    assert line["answer"]["event"] == "job.queued" and line["end"]["event"] == "job.succeeded"
    result = line["end"]["data"]["result"]
    fetched = tmp_path / "d" / Path(result["path"]).name
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == result["sha256"]
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(fetched)],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    assert 1.5 < float(json.loads(probe.stdout)["format"]["duration"]) < 3.5
    jobs = ctl(broker, "jobs")
    assert jobs.returncode == 0 and result["path"] not in jobs.stdout  # jobs lists jobs, not files
    assert any("record" in line and "succeeded" in line for line in jobs.stdout.splitlines())
    files = ctl(broker, "files")
    assert Path(result["path"]).name in files.stdout


def test_stream_restart_state_and_watch(
    served_agent: AgentProcess, broker: Broker, pki_dir: Path
) -> None:
    watcher = subprocess.Popen(
        [str(CAMERA_CTL), "--json", "watch", "--for", "60"],
        env=ctl_env(broker, "homeassistant"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def watched() -> dict[str, Any]:
        assert watcher.stdout is not None and watcher.stderr is not None
        line = watcher.stdout.readline()
        if not line:
            raise AssertionError(f"watch ended ({watcher.wait(5)}): {watcher.stderr.read()}")
        event: dict[str, Any] = json.loads(line)
        return event

    def next_event(wanted: str) -> dict[str, Any]:
        for _ in range(30):
            event = watched()
            if event["event"].startswith(wanted):
                return event
        raise AssertionError(f"no {wanted} event in 30")

    try:
        # The watcher is subscribed once a command of ours shows up in its output; until then
        # commands are sent again (one sent before its subscription is never shown, and a
        # read that waited for it would wait for nothing).
        subscribed = threading.Event()

        def nudge() -> None:
            while not subscribed.is_set():
                ctl(broker, "set", "hue", "0.05")

        nudger = threading.Thread(target=nudge, daemon=True)
        nudger.start()
        try:
            next_event("settings.applied")
        finally:
            subscribed.set()
            nudger.join(30)
        done = ctl(broker, "stream", "restart")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("SUCCESS: stream restarted")
        event = next_event("stream.")
        assert event["topic"] == "camera/status" and event["camera"] == "cam"
    finally:
        watcher.kill()
        watcher.wait()
    state = ctl(broker, "state")
    assert state.returncode == 0 and "stream online" in state.stdout, state.stdout
    # --count ends the watch by itself.
    counting = subprocess.Popen(
        [str(CAMERA_CTL), "watch", "--count", "1"], env=ctl_env(broker, "homeassistant"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(60):
            if counting.poll() is not None:
                break
            ctl(broker, "set", "hue", "0.1")
        assert counting.wait(10) == 0
        assert counting.stdout is not None
        lines = counting.stdout.read().splitlines()
        assert len(lines) == 1 and " cam settings.applied SUCCESS: hue set to 0.1" in lines[0]
    finally:
        counting.kill()
        counting.wait()


def test_all_and_list_cover_every_camera_on_the_broker(
    agent: AgentProcess, operator: Probe, broker: Broker, pki_dir: Path, tmp_path: Path
) -> None:
    others = []
    try:
        for identity, camera in (("cam-a", "a"), ("cam-b", "b")):
            client = pki_dir / "clients" / identity
            env = {
                "CAMERA_AGENT_MQTT__CERT": str(client / "cert.pem"),
                "CAMERA_AGENT_MQTT__KEY": str(client / "key.pem"),
                "CAMERA_AGENT_MQTT__BASE_TOPIC": f"camera/{camera}",
                "CAMERA_AGENT_CAMERA__ID": camera,
            }
            other = AgentProcess(broker, tmp_path / identity, env=env)
            other.start()
            others.append(other)
            operator.wait_for(
                is_online(camera),
                what=f"camera {camera} online",
            )
        done = ctl(broker, "--all", "set", "saturation", "1.1")
        assert done.returncode == 0, done.stderr
        lines = sorted(done.stdout.splitlines())
        assert lines == [f"{c}: SUCCESS: saturation set to 1.1" for c in ("a", "b", "cam")]
        listed = ctl(broker, "list")
        rows = [line.split() for line in listed.stdout.splitlines()]
        assert rows[0] == ["CAMERA", "AVAILABILITY", "STREAM", "LAST", "JOB"]
        assert sorted(r[:2] for r in rows[1:]) == [["a", "online"], ["b", "online"],
                                                   ["cam", "online"]]  # fmt: skip
        others[1].stop()  # camera b goes away: its will says offline; --all leaves it out
        operator.wait_for(lambda m: m.topic == "camera/b/availability" and m.payload == b"offline")
        done = ctl(broker, "--all", "--json", "set", "saturation", "1.2")
        cameras = sorted(json.loads(line)["camera"] for line in done.stdout.splitlines())
        assert cameras == ["a", "cam"]
        rows = [line.split() for line in ctl(broker, "list").stdout.splitlines()]
        assert ["b", "offline"] in [r[:2] for r in rows]
    finally:
        for other in others:
            other.stop()


@pytest.fixture
def camera_ctl_home(pki_dir: Path, broker: Broker, tmp_path: Path) -> Path:
    """A scripts/run home: its agent.toml names the broker, its PKI holds `operator`."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "pki").symlink_to(pki_dir)
    (home / "agent.toml").write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nca = "{home}/pki/ca_chain.pem"\n'
    )
    return home


def test_without_config_it_uses_the_run_home(
    agent: AgentProcess, broker: Broker, camera_ctl_home: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "CAMERA_AGENT_HOME": str(camera_ctl_home)}
    # `operator` is the probe's identity too: the broker hands the session to camera-ctl.
    done = ctl(broker, "set", "gamma", "1.3", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SUCCESS: gamma set to 1.3"
    config = load_ctl_config(None, {"CAMERA_AGENT_HOME": str(camera_ctl_home)})
    assert config.cert == camera_ctl_home / "pki/clients/operator/cert.pem"
    assert config.port == broker.port and config.base_topic == "camera"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CAMERA_CTL_HOST": "x"}, "ca, cert, key, port missing"),
        ({"CAMERA_CTL_PORT": "http"}, "port 'http' is not a number"),
        ({"CAMERA_CTL_COLOUR": "red"}, "unknown key 'colour'"),
        ({"CAMERA_AGENT_HOME": "/nonexistent"}, "no /nonexistent/agent.toml"),
    ],
)
def test_configuration_mistakes_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(CtlConfigError, match=message):
        load_ctl_config(None, environ)


def test_a_config_file_and_a_missing_key_file(tmp_path: Path, pki_dir: Path) -> None:
    config = tmp_path / "ctl.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = 1\nca = "{pki_dir}/ca_chain.pem"\n'
        f'cert = "{pki_dir}/clients/cli/cert.pem"\nkey = "{tmp_path}/absent.pem"\n'
    )
    done = subprocess.run(
        [str(CAMERA_CTL), "--config", str(config), "state"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"camera-ctl: key {tmp_path}/absent.pem does not exist"


def test_a_broker_restart_while_waiting_loses_neither_answer_nor_job_end(
    served_agent: AgentProcess, broker: Broker, operator: Probe
) -> None:
    """The broker restarts while `record --wait` waits: camera-ctl reconnects, and learns of the
    job's end whether it saw the event or asks `jobs` for it."""
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    runner = threading.Thread(
        target=lambda: result.update(done=ctl(broker, "--json", "record", "3", "--wait")),
    )
    runner.start()
    operator.wait_event(event="job.running", timeout=20)
    broker.restart()  # same port; the agent and camera-ctl both reconnect
    runner.join(90)
    assert "done" in result, "camera-ctl still waiting 90 s after a 3 s recording"
    done = result["done"]
    assert done.returncode == 0, done.stderr
    end = json.loads(done.stdout.splitlines()[0])["end"]
    assert end["event"] == "job.succeeded" and end["data"]["result"]["path"].endswith(".mp4")


def test_download_with_nginx_gone_fails_loudly_and_leaves_nothing(
    served_agent: AgentProcess, broker: Broker, web: WebServer, tmp_path: Path
) -> None:
    web.stop()
    target = tmp_path / "downloads"
    done = ctl(broker, "picture", "--download", str(target))
    assert done.returncode == 1
    assert done.stderr.startswith("error download_failed: cannot download https://")
    assert list(target.iterdir()) == []  # no partial file under any name
    web.start()
    again = ctl(broker, "picture", "--download", str(target))
    assert again.returncode == 0, again.stderr


def record_in_background(broker: Broker, *args: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: result.update(done=ctl(broker, "record", *args, timeout=180)), daemon=True
    )
    runner.start()
    return runner, result


def test_camera_ctl_follows_a_job_across_an_agent_restart(
    served_agent: AgentProcess, broker: Broker, operator: Probe
) -> None:
    runner, result = record_in_background(broker, "30", "--wait")
    operator.wait_event(event="job.progress", timeout=20)  # some seconds are recorded
    served_agent.kill()
    served_agent.start()  # as a supervisor (systemd, the pod's restart policy) would
    runner.join(120)
    done = result["done"]
    # The restarted agent finishes the recording from its journal and says what was lost.
    assert done.returncode == 0, done.stderr
    assert "s lost while the agent was down" in done.stdout and ".mp4 (" in done.stdout


@pytest.mark.slow
def test_an_agent_that_dies_mid_job_and_stays_away_ends_the_wait(
    served_agent: AgentProcess, broker: Broker, operator: Probe
) -> None:
    runner, result = record_in_background(broker, "60", "--wait")
    operator.wait_event(event="job.running", timeout=20)
    served_agent.kill()
    runner.join(120)
    done = result["done"]
    assert done.returncode == 1
    assert done.stderr.startswith("error offline: the camera went offline while job"), done.stderr


def test_progress_is_one_terminal_line_and_cleared(
    served_agent: AgentProcess, broker: Broker
) -> None:
    """On a terminal, --wait shows the job's progress on one line that each update rewrites,
    and clears it before the result; piped, it prints nothing but the result."""
    terminal, their_end = os.openpty()
    waiting = subprocess.Popen(
        [str(CAMERA_CTL), "record", "3", "--wait"], env=ctl_env(broker),
        stdout=subprocess.PIPE, stderr=their_end, text=True,
    )  # fmt: skip
    os.close(their_end)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([terminal], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the other end closed with the process
                break
            if not chunk:
                break
            shown += chunk
        out, _ = waiting.communicate(timeout=60)
    finally:
        os.close(terminal)
    assert waiting.returncode == 0
    assert out.startswith("SUCCESS: recorded"), out
    updates = shown.count(b"\r\x1b[K")
    assert updates >= 3, shown  # at least two progress lines and the clearing
    assert b"elapsed_s" in shown and b"\n" not in shown.replace(b"\r\n", b""), shown
    assert shown.endswith(b"\r\x1b[K"), shown


def test_a_broken_run_home_is_named(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('[mqtt]\nport = "http"\n')
    with pytest.raises(CtlConfigError, match=r"agent\.toml: port 'http' is not a number"):
        load_ctl_config(None, {"CAMERA_AGENT_HOME": str(tmp_path)})
    (tmp_path / "agent.toml").write_text('mqtt = "broker"\n')
    with pytest.raises(CtlConfigError, match=r"\[mqtt\] is not a table"):
        load_ctl_config(None, {"CAMERA_AGENT_HOME": str(tmp_path)})
