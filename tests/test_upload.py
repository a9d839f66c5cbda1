"""Uploads to a real S3 store (SeaweedFS built from its Go module), from the real agent (real
broker, MediaMTX, ffmpeg): keys and SHA-256, the store killed in the middle of a multipart
upload, the agent killed with uploads queued, the bandwidth cap, per-camera keys, removal after
the confirmed upload, and captures deleted before their turn."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import obstore
import pytest
from devstack import (
    REPO,
    Broker,
    ConsoleService,
    MediaServer,
    ObjectStore,
    StoreIdentity,
    WebServer,
)
from obstore.store import S3Store
from playwright.sync_api import expect

from agent.config import UploadSettings
from agent.jobs.captures import Captures
from agent.jobs.retention import CaptureIndex, Retention, StorageLimits
from agent.upload import Uploader
from tests.browser import chromium, context, screenshot
from tests.conftest import start_agent
from tests.support import AgentProcess, Probe, RtspReader, children_of, settle, wait_until
from tests.test_ctl import ctl
from tests.test_jobs import ask, run_job

MIB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    server = ObjectStore(tmp_path / "s3")
    server.add_identity(StoreIdentity.for_camera("cam"))
    server.add_identity(StoreIdentity.for_camera("other"))
    server.start()
    server.create_bucket()
    yield server
    server.stop()


def identity(store: ObjectStore, name: str) -> StoreIdentity:
    return next(i for i in store.identities if i.name == name)


def upload_env(store: ObjectStore, work: Path, camera: str = "cam", **extra: str) -> dict[str, str]:
    env = store.agent_settings(identity(store, f"camera-{camera}"), work / "s3-credentials")
    env |= {
        "CAMERA_AGENT_UPLOAD__RETRY_MIN_S": "0.5",
        "CAMERA_AGENT_UPLOAD__RETRY_MAX_S": "2",
        # Fast stream restarts, as the streaming_agent fixture has.
        "CAMERA_AGENT_STREAM__RESTART_MIN_S": "0.05",
        "CAMERA_AGENT_STREAM__RESTART_MAX_S": "0.4",
    }
    env.update({f"CAMERA_AGENT_UPLOAD__{k.upper()}": v for k, v in extra.items()})
    return env


def uploading_agent(
    broker: Broker, media: MediaServer | None, operator: Probe, work: Path, env: dict[str, str]
) -> AgentProcess:
    agent = start_agent(AgentProcess(broker, work, media=media, env=env), operator)
    if media is not None:
        operator.wait_event(event="stream.online", timeout=15)
    return agent


def done_for(operator: Probe, file: str, timeout: float = 30) -> dict[str, Any]:
    found: dict[str, Any] = operator.wait_for(
        lambda m: m.topic == "camera/status" and m.json()["event"] == "upload.done"
        and m.json()["data"]["file"] == file,
        timeout=timeout, what=f"upload.done of {file}",
    ).json()  # fmt: skip
    return found


def wait_state(operator: Probe, check: Any, timeout: float = 20) -> dict[str, Any]:
    body: dict[str, Any] = operator.wait_for(
        lambda m: m.topic == "camera/state" and check(m.json().get("upload") or {}),
        timeout=timeout, what="state.upload",
    ).json()  # fmt: skip
    return body


class StoreIntake:
    """The bytes the store's S3 port has received (the kernel's count for its connections,
    `ss -ti`), sampled every 0.1 s in a thread."""

    def __init__(self, store: ObjectStore) -> None:
        self._port = store.s3_port
        self._seen: dict[str, int] = {}  # by connection: a closed one keeps its last count
        self.samples: list[tuple[float, int]] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> int:
        listed = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( sport = :{self._port} )"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout  # fmt: skip
        peer = ""
        for line in listed.splitlines():
            if not line.startswith(("\t", " ")):
                peer = line.split()[-1]
            elif (found := re.search(r"bytes_received:(\d+)", line)) is not None:
                self._seen[peer] = int(found[1])
        return sum(self._seen.values())

    def _run(self) -> None:
        while not self._stopped.wait(0.1):  # a sampling period, not a wait for an event
            self.samples.append((time.monotonic(), self._read()))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def received(self) -> int:
        """Bytes received by the last sample (0 before the first)."""
        return self.samples[-1][1] if self.samples else 0

    def busiest_second(self) -> float:
        """The most bytes received within any one second."""
        most = 0.0
        for i, (at, count) in enumerate(self.samples):
            later = [c for t, c in self.samples[i:] if t <= at + 1.0]
            most = max(most, later[-1] - count)
        return most


def random_clip(work: Path, size: int) -> Path:
    """A recording's name on ``size`` random bytes (nothing compresses them away)."""
    clip = work / "captures" / "record-20261204T100000.000Z.mp4"
    clip.write_bytes(os.urandom(size))
    return clip


def upload_processes(agent_pid: int) -> list[int]:
    """The agent's upload processes (agent/upload_worker.py) running now."""
    found = []
    for pid in children_of(agent_pid):
        with contextlib.suppress(OSError):  # ended meanwhile
            if b"agent.upload_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def test_picture_recording_and_timelapse_arrive_under_their_keys_with_their_sha256(
    broker: Broker, media: MediaServer, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    agent = uploading_agent(broker, media, operator, work, upload_env(store, work))
    try:
        made = []
        picture = run_job(operator, {"id": "p", "action": "picture"})
        made.append((picture["data"]["result"]["path"], "pictures"))
        record = run_job(operator, {"id": "r", "action": "record", "duration": 2}, timeout=40)
        made += [(f["path"], "recordings") for f in record["data"]["result"]["files"]]
        timelapse = run_job(
            operator, {"id": "t", "action": "timelapse", "interval": 1, "count": 3, "fps": 5},
            timeout=60,
        )  # fmt: skip
        made.append((timelapse["data"]["result"]["video"]["path"], "timelapse"))
        for name, kind in made:
            done = done_for(operator, name)
            key = f"cam/{kind}/{today()}/{Path(name).name}"
            local = work / "captures" / name
            assert done["ok"] is True and done["data"]["key"] == key, done
            assert done["data"]["sha256"] == sha256_of(local) == store.object_sha256(key)
            assert done["data"]["bytes"] == local.stat().st_size
            assert done["data"]["removed"] is False and local.exists()  # upload.then = keep
        listed = store.objects("cam/")
        assert sorted(listed) == sorted(f"cam/{k}/{today()}/{Path(n).name}" for n, k in made)
        # The picture went up in one PUT carrying its SHA-256, which the store checked and
        # kept: it gives it back as sent.
        picture_key = f"cam/pictures/{today()}/{Path(made[0][0]).name}"
        digest = hashlib.sha256((work / "captures" / made[0][0]).read_bytes()).digest()
        assert store.stored_checksum(picture_key) == base64.b64encode(digest).decode()
        # `files` shows each capture's upload.
        page = ask(operator, {"id": "ls", "action": "files", "prefix": "picture-"})["data"]
        shown = {f["name"]: f["upload"] for f in page["files"]}
        assert shown[made[0][0]]["state"] == "done"
        assert shown[made[0][0]]["key"] == f"cam/pictures/{today()}/{Path(made[0][0]).name}"
        state = wait_state(operator, lambda u: u.get("queued") == 0 and u.get("uploaded") >= 3)
        assert state["upload"]["last_error"] is None
    finally:
        agent.stop()


def test_the_store_killed_mid_multipart_and_back_20_s_later_gets_the_file_once(
    broker: Broker, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    # 80 Mbit/s: the 50 MB upload takes about 5 s, time to kill the store half-way.
    agent = uploading_agent(
        broker, None, operator, work, upload_env(store, work, max_kbit_s="80000")
    )
    try:
        big = random_clip(work, 50 * MIB)
        key = f"cam/recordings/{today()}/{big.name}"
        queued = ask(operator, {"id": "u", "action": "upload", "file": big.name})
        assert queued["event"] == "upload.queued" and queued["data"]["key"] == key, queued
        wait_state(operator, lambda u: u.get("uploading") == big.name)
        intake = StoreIntake(store)
        wait_until(lambda: intake.received() >= 10 * MIB, what="some parts at the store")
        intake.stop()
        store.kill()
        assert intake.received() < 50 * MIB, "the upload was over before the store was killed"
        time.sleep(20)  # the outage itself: the store stays down this long
        store.start()
        seen_sizes = set()
        deadline = time.monotonic() + 90
        done = None
        while done is None and time.monotonic() < deadline:
            listed = store.objects("cam/")
            # Never a partial object: the key is absent until the whole file is there.
            assert set(listed) <= {key}, listed
            seen_sizes |= set(listed.values())
            with contextlib.suppress(AssertionError):  # not yet: list again
                done = operator.wait_for(
                    lambda m: m.topic == "camera/status" and m.json()["event"] == "upload.done",
                    timeout=0.5,
                ).json()
        assert done is not None, "no upload.done within 90 s of the store's return"
        assert seen_sizes <= {50 * MIB}, seen_sizes
        assert store.objects("cam/") == {key: 50 * MIB}
        assert done["data"]["sha256"] == sha256_of(big) == store.object_sha256(key)
        assert done["data"]["attempts"] >= 2
        # Sent as parts, each with its SHA-256: the store keeps their composite checksum.
        stored = store.stored_checksum(key)
        assert stored is not None and stored.endswith("-7"), stored  # 50 MiB in 8 MiB parts
        later = settle(operator, 3)
        again = [m for m in later if m.topic == "camera/status"
                 and m.json()["event"] == "upload.done"]  # fmt: skip
        assert not again, "uploaded twice"
    finally:
        agent.stop()


def test_uploads_queued_when_the_agent_is_killed_all_arrive_once_after_its_restart(
    broker: Broker, media: MediaServer, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    env = upload_env(store, work)
    store.stop()  # nothing can go up: the queue fills
    agent = uploading_agent(broker, media, operator, work, env)
    names = []
    for n in range(10):
        done = run_job(operator, {"id": f"p{n}", "action": "picture"})
        names.append(done["data"]["result"]["path"])
    wait_state(operator, lambda u: u.get("queued") == 10)
    agent.kill()  # SIGKILL: the journal is all that is left
    store.start()
    agent = uploading_agent(broker, media, operator, work, env)
    try:
        keys = {}
        for name in names:
            done = done_for(operator, name, timeout=60)
            keys[name] = done["data"]["key"]
            assert done["data"]["sha256"] == sha256_of(work / "captures" / name)
        assert store.objects("cam/") == {
            keys[n]: (work / "captures" / n).stat().st_size for n in names
        }
        later = settle(operator, 3)
        repeated = [m for m in later if m.topic == "camera/status"
                    and m.json()["event"] == "upload.done"]  # fmt: skip
        assert not repeated, "an upload went twice"
        assert not list((work / "state" / "uploads").glob("*.json")), "journal left behind"
    finally:
        agent.stop()


def test_a_camera_keys_reach_its_own_prefix_only(store: ObjectStore) -> None:
    mine = store.client(identity(store, "camera-cam"))
    obstore.put(store.client(), "other/pictures/x.jpg", b"of the other camera")
    obstore.put(mine, "cam/pictures/mine.jpg", b"mine")
    assert bytes(obstore.get(mine, "cam/pictures/mine.jpg").bytes()) == b"mine"
    with pytest.raises(Exception, match=r"AccessDenied|Forbidden|403"):
        obstore.put(mine, "other/pictures/y.jpg", b"into the other camera's prefix")
    with pytest.raises(Exception, match=r"AccessDenied|Forbidden|403"):
        obstore.get(mine, "other/pictures/x.jpg").bytes()
    assert set(store.objects()) == {"other/pictures/x.jpg", "cam/pictures/mine.jpg"}


def test_an_upload_the_store_refuses_fails_in_its_words_and_stays_queued(
    broker: Broker, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    # Camera cam's keys, but another camera's prefix: the store refuses every attempt.
    env = upload_env(store, work, prefix="other/{kind}/", retry_max_s="0.5")
    agent = uploading_agent(broker, None, operator, work, env)
    try:
        picture = work / "captures" / "picture-20261204T100000.000Z.jpg"
        picture.write_bytes(b"\xff\xd8 not much of a picture \xff\xd9")
        ask(operator, {"id": "u", "action": "upload", "file": picture.name})
        failed = operator.wait_event(event="upload.failed", timeout=30)
        assert failed["ok"] is False and failed["error"]["code"] == "io_error"
        assert "AccessDenied" in failed["data"]["error"], failed
        assert failed["data"]["attempts"] == 5 and failed["data"]["queued"] is True
        assert picture.exists() and store.objects() == {}
        listed = ask(operator, {"id": "ls", "action": "files"})["data"]["files"]
        assert listed[0]["upload"]["state"] == "failed"
        assert "AccessDenied" in listed[0]["upload"]["error"]
        secret = identity(store, "camera-cam").secret_key
        assert secret not in agent.log_text()
    finally:
        agent.stop()


def test_delete_after_days_0_removes_only_after_the_confirmed_upload(
    broker: Broker, media: MediaServer, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    env = upload_env(store, work, then="delete_after_days 0")
    store.stop()
    agent = uploading_agent(broker, media, operator, work, env)
    try:
        name = run_job(operator, {"id": "p", "action": "picture"})["data"]["result"]["path"]
        local = work / "captures" / name
        failures = [m for m in settle(operator, 4) if m.topic == "camera/state"]
        assert failures and failures[-1].json()["upload"]["queued"] == 1
        assert local.exists(), "removed while the store was down"
        store.start()
        done = done_for(operator, name, timeout=40)
        assert done["data"]["removed"] is True
        assert "removed here" in done["message"]
        assert not local.exists()
        assert store.objects("cam/") == {done["data"]["key"]: done["data"]["bytes"]}
    finally:
        agent.stop()


def test_a_capture_deleted_before_its_turn_is_dropped_with_a_warning(
    broker: Broker, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    store.stop()
    agent = uploading_agent(broker, None, operator, work, upload_env(store, work))
    try:
        picture = work / "captures" / "picture-20261204T100000.000Z.jpg"
        picture.write_bytes(b"\xff\xd8 a picture \xff\xd9")
        ask(operator, {"id": "u", "action": "upload", "file": picture.name})
        deleted = ask(operator, {"id": "d", "action": "delete", "file": picture.name})
        assert deleted["event"] == "file.deleted"
        dropped = operator.wait_event(event="upload.dropped", timeout=10)
        assert dropped["data"]["file"] == picture.name
        assert "deleted before its upload" in dropped["message"]
        wait_state(operator, lambda u: u.get("queued") == 0)
        errors = [m for m in settle(operator, 2) if m.topic == "camera/status"
                  and m.json()["event"] == "upload.failed"]  # fmt: skip
        assert not errors
    finally:
        agent.stop()


def test_the_bandwidth_cap_holds_and_the_live_stream_keeps_its_frame_rate(
    broker: Broker, media: MediaServer, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    agent = uploading_agent(
        broker, media, operator, work, upload_env(store, work, max_kbit_s="2000")
    )
    reader = RtspReader(media.viewer_url(), 1280, 720)
    try:
        reader.wait_for(lambda f: True, timeout=15)
        time.sleep(2)
        before = reader.snapshot()
        clip = random_clip(work, 12 * MIB // 4)  # 3 MiB: about 12.6 s at 2000 kbit/s
        received = StoreIntake(store)
        ask(operator, {"id": "u", "action": "upload", "file": clip.name})
        began = time.time()
        done = done_for(operator, clip.name, timeout=40)
        ended = time.time()
        received.stop()
        rate_kbit_s = done["data"]["bytes"] * 8 / done["data"]["seconds"] / 1000
        assert 1800 <= rate_kbit_s <= 2200, rate_kbit_s
        # On the wire too, not only on average: no second in which the store took much more
        # (the client buffers the whole file; sent as it is, it would arrive at once).
        assert received.busiest_second() * 8 / 1000 <= 1.25 * 2000, received.samples
        frames = [f for f in reader.snapshot() if began <= f.arrived <= ended]
        fps_during = len(frames) / (ended - began)
        recent = [f for f in before if f.arrived >= before[-1].arrived - 2]
        fps_before = len(recent) / 2
        assert fps_during >= 0.9 * min(fps_before, 30), (fps_during, fps_before)
    finally:
        reader.close()
        agent.stop()


def test_retention_spares_what_waits_for_its_upload_except_for_the_disk_floor(
    tmp_path: Path,
) -> None:
    for n, name in enumerate(["picture-a.jpg", "picture-b.jpg", "picture-c.jpg"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + n, 1000 + n))
    retention = Retention(
        tmp_path, StorageLimits(max_bytes=1500, min_free_bytes=10_000), set,
        lambda *a: None, lambda: None, not_uploaded=lambda: {"picture-a.jpg"},
    )  # fmt: skip
    retention.index = CaptureIndex.scan(tmp_path)
    # max_bytes asks for two: the oldest waits for its upload, so the next two go.
    victims, rules = retention._choose(set(), free=1_000_000, waiting={"picture-a.jpg"})
    assert [name for name, _ in victims] == ["picture-b.jpg", "picture-c.jpg"]
    assert rules == ["max_bytes"]
    # Below the free-space floor, the oldest goes, upload or not.
    victims, rules = retention._choose(set(), free=9_500, waiting={"picture-a.jpg"})
    assert victims[0][0] == "picture-a.jpg"
    assert "min_free_bytes" in rules


def test_bad_upload_settings_are_refused_at_start_in_words(broker: Broker, tmp_path: Path) -> None:
    work = tmp_path / "agent"
    agent = AgentProcess(broker, work)
    cases = {
        "no bucket": (
            {"CAMERA_AGENT_UPLOAD__ENABLED": "true"}, "upload.enabled needs upload.bucket"
        ),
        "no keys": (
            {"CAMERA_AGENT_UPLOAD__ENABLED": "true", "CAMERA_AGENT_UPLOAD__BUCKET": "captures",
             "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
            "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
        ),
        "bad then": ({"CAMERA_AGENT_UPLOAD__THEN": "delete soon"}, "delete_after_days N"),
        "bad prefix": ({"CAMERA_AGENT_UPLOAD__PREFIX": "{camera}/{month}/"}, "{month}"),
    }  # fmt: skip
    for what, (env, said) in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--config", str(agent.config_path)],
            capture_output=True, text=True, timeout=30, env={**os.environ, **env}, check=False,
        )  # fmt: skip
        assert result.returncode != 0, what
        assert said in result.stderr, (what, result.stderr[-500:])


def test_scripts_run_with_s3_uploads_the_captures_to_its_own_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stack = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "devstack.py"), str(home), "--any-ports",
         "--with-s3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert stack.stdout is not None
    printed: dict[str, str] = {}
    try:
        for line in stack.stdout:
            label, _, rest = line.partition(":")
            printed[label.strip()] = rest.strip()
            if label == "uploads":
                break
        assert "uploads" in printed, f"scripts/run --with-s3 printed no uploads line: {printed}"
        endpoint = printed["uploads"].split()[0].removesuffix("/captures/cam/")
        broker_port = int(printed["broker on 127.0.0.1"].split(" ")[0])
        operator = Probe(Broker(home / "pki", tmp_path / "probe", port=broker_port), "operator")
        try:
            operator.subscribe("camera/#")
            operator.wait_event(event="stream.online", timeout=30)
            picture = run_job(operator, {"id": "p", "action": "picture"})["data"]["result"]
            done = done_for(operator, picture["path"], timeout=60)
        finally:
            operator.close()
        admin = next(
            StoreIdentity.from_json(i)
            for i in json.loads((home / "s3-identities.json").read_text())
            if i["name"] == "admin"
        )
        store = S3Store(
            "captures", endpoint=endpoint, region="us-east-1", access_key_id=admin.access_key,
            secret_access_key=admin.secret_key, virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )  # fmt: skip
        body = bytes(obstore.get(store, done["data"]["key"]).bytes())
        assert hashlib.sha256(body).hexdigest() == picture["sha256"] == done["data"]["sha256"]
        assert done["data"]["key"] == f"cam/pictures/{today()}/{picture['path']}"
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(30)
    assert "SeaweedFS" in printed["uploads"]


def test_camera_ctl_queues_an_upload_and_files_shows_it(
    broker: Broker, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    agent = uploading_agent(broker, None, operator, work, upload_env(store, work))
    try:
        picture = work / "captures" / "picture-20261204T100000.000Z.jpg"
        picture.write_bytes(b"\xff\xd8 a picture \xff\xd9")
        key = f"cam/pictures/{today()}/{picture.name}"
        queued = ctl(broker, "upload", picture.name)
        assert queued.returncode == 0, queued.stderr
        assert queued.stdout.startswith(f"SUCCESS: {picture.name} queued for upload as {key}")
        done_for(operator, picture.name)
        listed = ctl(broker, "files", "picture-")
        assert listed.returncode == 0, listed.stderr
        assert f"upload done {key}" in listed.stdout, listed.stdout
        missing = ctl(broker, "upload", "picture-nothere.jpg")
        assert missing.returncode != 0
        assert "no capture named 'picture-nothere.jpg'" in missing.stderr + missing.stdout
        escape = ctl(broker, "upload", "../agent.toml")
        assert escape.returncode != 0
        assert "not a name inside the captures directory" in escape.stderr + escape.stdout
    finally:
        agent.stop()


def test_upload_with_uploads_off_says_how_to_turn_them_on(
    agent: AgentProcess, operator: Probe
) -> None:
    answer = ask(operator, {"id": "u", "action": "upload", "file": "picture-x.jpg"})
    assert answer["ok"] is False and answer["error"]["code"] == "not_available"
    assert "set upload.enabled" in answer["error"]["detail"]
    state = operator.wait_for(lambda m: m.topic == "camera/state", what="state").json()
    assert state["upload"]["enabled"] is False and state["upload"]["queued"] == 0


def test_an_upload_that_ends_while_the_broker_is_down_is_reported_once_it_is_back(
    broker: Broker, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    # 16 Mbit/s: the 6 MiB upload takes about 3 s, time to stop the broker under it.
    agent = uploading_agent(
        broker, None, operator, work, upload_env(store, work, max_kbit_s="16000")
    )
    operator.close()  # a persistent session instead, so nothing published meanwhile is missed
    watcher = Probe(broker, "operator", session_expiry_s=300)
    try:
        watcher.subscribe("camera/#")
        clip = random_clip(work, 6 * MIB)
        ask(watcher, {"id": "u", "action": "upload", "file": clip.name})
        broker.stop()
        # The upload ends while the broker is away: the store has the object.
        log = work / "state" / "uploads" / "uploaded.jsonl"
        wait_until(lambda: log.exists() and clip.name in log.read_text(), timeout=30)
        broker.start()
        done = done_for(watcher, clip.name, timeout=30)
        assert done["data"]["sha256"] == sha256_of(clip) == store.object_sha256(done["data"]["key"])
    finally:
        watcher.close()
        agent.stop()


def test_the_upload_process_killed_half_way_is_restarted_and_the_file_arrives_once(
    broker: Broker, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    agent = uploading_agent(
        broker, None, operator, work, upload_env(store, work, max_kbit_s="40000")
    )
    try:
        clip = random_clip(work, 30 * MIB)  # about 6 s at 40 Mbit/s
        ask(operator, {"id": "u", "action": "upload", "file": clip.name})
        assert agent.process is not None
        pid = agent.process.pid
        worker = wait_until(lambda: upload_processes(pid), what="the upload process")[0]
        intake = StoreIntake(store)
        wait_until(lambda: intake.received() >= 8 * MIB, what="some of it at the store")
        intake.stop()
        os.kill(worker, signal.SIGKILL)
        assert intake.received() < 30 * MIB, "the upload was over before its process was killed"
        done = done_for(operator, clip.name, timeout=60)
        assert done["data"]["attempts"] == 2
        assert "the upload process ended (killed by SIGKILL)" in agent.log_text()
        assert store.objects("cam/") == {done["data"]["key"]: 30 * MIB}
        assert done["data"]["sha256"] == sha256_of(clip) == store.object_sha256(done["data"]["key"])
        # Its process is gone once the queue is empty: no upload process lingers.
        wait_until(lambda: not upload_processes(pid), what="the upload process to end")
    finally:
        agent.stop()


def test_a_full_disk_under_the_journal_keeps_the_capture_and_says_it_is_not_queued(
    broker: Broker, media: MediaServer, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    journal = work / "state" / "uploads"
    journal.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(journal)], check=True)
    try:
        filler = journal / ".filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            handle.write(b"\0" * (128 << 10))  # more than fits: the journal's disk is full
        agent = uploading_agent(broker, media, operator, work, upload_env(store, work))
        try:
            taken = run_job(operator, {"id": "p", "action": "picture"})
            assert taken["ok"] is True  # the picture is kept: only its upload is not queued
            name = taken["data"]["result"]["path"]
            failed = operator.wait_event(event="upload.failed")
            assert failed["data"]["file"] == name and failed["data"]["queued"] is False
            assert "No space left on device" in failed["data"]["error"]
            assert f"`upload {name}` queues it again" in failed["message"]
            assert (work / "captures" / name).exists()
            filler.unlink()  # room again: queued by hand, it goes up
            queued = ask(operator, {"id": "u", "action": "upload", "file": name})
            assert queued["event"] == "upload.queued", queued
            done = done_for(operator, name)
            assert done["data"]["sha256"] == sha256_of(work / "captures" / name)
        finally:
            agent.stop()
    finally:
        subprocess.run(["umount", "-l", str(journal)], check=False)


def test_an_https_store_behind_a_private_ca_needs_upload_ca_file(
    broker: Broker, operator: Probe, pki_dir: Path, tmp_path: Path
) -> None:
    store = ObjectStore(tmp_path / "s3", pki_dir=pki_dir)
    store.add_identity(StoreIdentity.for_camera("cam"))
    store.start()
    try:
        store.create_bucket()
        work = tmp_path / "agent"
        env = upload_env(store, work, endpoint=store.https_endpoint, retry_max_s="0.5")
        # Without the CA: refused in words, nothing sent.
        agent = uploading_agent(broker, None, operator, work, env)
        try:
            clip = random_clip(work, 3 * MIB)
            ask(operator, {"id": "u1", "action": "upload", "file": clip.name})
            failed = operator.wait_event(event="upload.failed", timeout=60)
            assert "certificate" in failed["data"]["error"], failed["data"]["error"]
            assert "upload.ca_file" in failed["data"]["error"]
            assert store.objects() == {}
        finally:
            agent.stop()
        # With this PKI's CA, through the paced proxy (CONNECT: TLS end to end with the store).
        env.update(
            CAMERA_AGENT_UPLOAD__CA_FILE=str(pki_dir / "ca_chain.pem"),
            CAMERA_AGENT_UPLOAD__MAX_KBIT_S="16000",
        )
        agent = uploading_agent(broker, None, operator, work, env)
        try:
            done = done_for(operator, clip.name, timeout=60)
            assert (
                done["data"]["sha256"]
                == sha256_of(clip)
                == store.object_sha256(done["data"]["key"])
            )
            rate_kbit_s = done["data"]["bytes"] * 8 / done["data"]["seconds"] / 1000
            assert rate_kbit_s <= 16000 * 1.1, rate_kbit_s
        finally:
            agent.stop()
    finally:
        store.stop()


def test_a_queue_left_when_uploads_are_turned_off_waits_for_them_untouched(
    tmp_path: Path,
) -> None:
    captures = Captures(tmp_path / "captures")
    captures.ensure()
    (captures.root / "picture-a.jpg").write_bytes(b"\xff\xd8 a picture \xff\xd9")
    events: list[str] = []

    def uploader(settings: UploadSettings) -> Uploader:
        made = Uploader(
            settings, "cam", captures, tmp_path / "uploads",
            lambda name, *_: events.append(name), lambda: None,
        )  # fmt: skip
        made.start()
        return made

    on = UploadSettings(enabled=True, bucket="captures")
    queued = asyncio.run(uploader(on).queue_by_hand("picture-a.jpg"))
    assert queued.key == f"cam/pictures/{time.strftime('%Y-%m-%d', time.gmtime())}/picture-a.jpg"
    # A series' frame queued by hand keeps its folder in the key: frames of two series differ.
    (captures.root / "timelapse-x").mkdir()
    (captures.root / "timelapse-x" / "000001.jpg").write_bytes(b"\xff\xd8 a frame \xff\xd9")
    frame = asyncio.run(uploader(on).queue_by_hand("timelapse-x/000001.jpg"))
    assert frame.key.endswith("/timelapse-x/000001.jpg") and frame.kind == "timelapse"
    # Off: nothing is spared for an upload that will not come, and the journal stays.
    off = uploader(UploadSettings())
    assert off.pending() == set() and off.snapshot()["queued"] == 0
    assert list((tmp_path / "uploads").glob("*.json"))
    # On again: the capture is queued as it was.
    assert uploader(on).pending() == {"picture-a.jpg", "timelapse-x/000001.jpg"}
    assert events == []


def test_the_consoles_gallery_shows_each_captures_upload(
    broker: Broker, media: MediaServer, operator: Probe, store: ObjectStore, tmp_path: Path
) -> None:
    work = tmp_path / "agent"
    web = WebServer(broker.pki_dir, work / "captures", tmp_path / "web", media=media)
    web.start()
    service = ConsoleService(broker, web, tmp_path / "console")
    service.start()
    env = upload_env(store, work)
    agent = start_agent(AgentProcess(broker, work, media=media, web=web, env=env), operator)
    try:
        operator.wait_event(event="stream.online", timeout=15)
        sent = run_job(operator, {"id": "p1", "action": "picture"})["data"]["result"]["path"]
        done_for(operator, sent)
        store.stop()  # the next one waits for the store
        waiting = run_job(operator, {"id": "p2", "action": "picture"})["data"]["result"]["path"]
        with chromium() as browser:
            origin = web.url.rstrip("/")
            page = context(browser, origin, broker.pki_dir, "operator").new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{origin}/#/camera/camera")
            page.get_by_role("link", name="Gallery").click()
            uploaded = page.locator(f'[data-file="{sent}"]')
            expect(uploaded).to_have_attribute("data-upload", "done")
            expect(uploaded.locator(".file-facts")).to_contain_text("uploaded")
            key = f"cam/pictures/{today()}/{sent}"
            expect(uploaded.locator(".file-facts")).to_have_attribute("title", key)
            queued = page.locator(f'[data-file="{waiting}"]')
            expect(queued.locator(".file-facts")).to_contain_text(
                re.compile("upload (queued|uploading)")
            )
            screenshot(page, "console-gallery-uploads-desktop")
            page.set_viewport_size({"width": 390, "height": 844})
            expect(queued).to_be_visible()
            screenshot(page, "console-gallery-uploads-phone")
    finally:
        agent.stop()
        service.stop()
        web.stop()
