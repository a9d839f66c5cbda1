"""`scripts/chaos [--minutes N] [--seed S] [--check]`: the real stack under a steady load while
faults strike at random moments, then a table of what was kept and what was lost.

Load (one operator, a persistent MQTT session): settings at 20/s, a picture every second,
recordings of 5 s back to back, a `stream restart` every 20 s, and one timelapse series (a frame
every 2 s until the load ends, then assembled). Faults, one at a time, every
6-12 s: the broker restarted, MediaMTX restarted, the pusher SIGKILLed, the agent SIGKILLed
and restarted, the agent stopped and restarted, the captures disk (a small tmpfs) filled for a
few seconds; each kind once, in a random order, before any comes again. When the time is up
the faults stop, everything still outstanding gets time to settle, and the agent is stopped.

`--with-s3` adds a SeaweedFS store that the agent uploads every capture to, and a fault that
SIGKILLs the store and starts it again a few seconds later; the check then also asks that the
upload queue emptied, that every capture left on disk was uploaded, that each object in the
bucket is one an `upload.done` reported (never a stray or partial one), under one key per
capture, and that the store gives back the bytes whose SHA-256 the event carried.

`--check` (what CI runs, in a short form, as tests/test_chaos.py) exits 1 unless every command
was answered (once, apart from copies flagged `duplicate`), every job's terminal event arrived
with one outcome, no `internal_error` was published, the retained state stayed small, and no
process of the agent outlived it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import Broker, MediaServer, ObjectStore, StoreIdentity

from agent.atomicfile import TEMP_MARK
from bench.control_plane import process_usage
from pki.authority import CertificateAuthority
from tests.support import AgentProcess, Probe, Received, children_of

ANSWERS = frozenset({
    "settings.applied", "settings.rejected", "action.rejected", "job.queued", "job.stopping",
    "jobs.listed", "stream.started", "stream.stopped", "stream.restarted",
})  # fmt: skip
TERMINAL = frozenset({"job.succeeded", "job.failed", "job.cancelled"})
RECORD_S = 5.0
TIMELAPSE_INTERVAL_S = 2.0
STATE_LIMIT_BYTES = 64 * 1024  # far below the broker's 256 KiB packet limit
SETTLE_S = 90.0
FILLER = "zz-chaos-filler"


@dataclass
class Tally:
    """What the operator sent and what came back, from its own subscription."""

    sent: dict[str, str] = field(default_factory=dict)  # command id -> kind
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    job_of: dict[str, str] = field(default_factory=dict)  # job id -> command id
    kind_of: dict[str, str] = field(default_factory=dict)  # job id -> kind
    terminal: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    terminal_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)  # job id -> terminal messages
    internal_errors: list[str] = field(default_factory=list)
    pruned: set[str] = field(default_factory=set)  # captures storage.pruned said it removed
    max_state_bytes: int = 0
    uploads: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    upload_ends: Counter[str] = field(default_factory=Counter)  # event name -> how many
    # Keys of uploads dropped after failed attempts: one of them may have been stored.
    dropped_after_attempts: set[str] = field(default_factory=set)
    upload_state: dict[str, Any] = field(default_factory=dict)  # the last `state.upload`
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, message: Received) -> None:
        if message.topic == "camera/state":
            self.max_state_bytes = max(self.max_state_bytes, len(message.payload))
            with self.lock:
                self.upload_state = message.json().get("upload") or {}
            return
        if message.topic != "camera/status":
            return
        body = message.json()
        with self.lock:
            if body.get("error", {}).get("code") == "internal_error":
                self.internal_errors.append(message.payload.decode(errors="replace"))
            name, command_id, job = body["event"], body.get("id"), body.get("job")
            if name == "storage.pruned":
                # Units: a file, or a whole series as `folder/` (`more` when one pass named
                # too many to list, which this load never comes near).
                self.pruned.update(body.get("data", {}).get("files") or [])
            if name.startswith("upload."):
                self.upload_ends[name] += 1
                if name == "upload.done":
                    self.uploads[body["data"]["file"]].append(body["data"])
                if name == "upload.dropped" and body["data"].get("attempts"):
                    self.dropped_after_attempts.add(body["data"]["key"])
            if name in ANSWERS and command_id in self.sent:
                self.answers[command_id].append(body)
                if name == "job.queued" and job:
                    self.job_of[job] = command_id
                    self.kind_of[job] = self.sent[command_id]
            if name in TERMINAL and job:
                self.deliveries[job] += 1
                # A redelivery repeats the same message; another outcome would be a second end.
                self.terminal[job].add(f"{name} {body['ts']}")
                self.terminal_events[job] = body

    def outstanding(self) -> tuple[list[str], list[str]]:
        """(commands without an answer, jobs without a terminal event)."""
        with self.lock:
            unanswered = [i for i in self.sent if not self.answers.get(i)]
            open_jobs = [j for j in self.job_of if not self.terminal.get(j)]
        return unanswered, open_jobs

    def uploads_waiting(self) -> bool:
        with self.lock:
            state = self.upload_state
        return bool(state.get("enabled")) and bool(state.get("queued") or state.get("uploading"))

    def record_open(self) -> bool:
        with self.lock:
            for command_id, kind in self.sent.items():
                if kind != "record":
                    continue
                answers = self.answers.get(command_id)
                if not answers:
                    return True  # not answered yet
                job = answers[0].get("job")
                if answers[0]["event"] == "job.queued" and job and not self.terminal.get(job):
                    return True
        return False


class Load:
    """The operator's steady traffic, on a thread; every command has an id of its own."""

    def __init__(self, operator: Probe, tally: Tally, minutes: float) -> None:
        self._operator = operator
        self._tally = tally
        self._minutes = minutes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0
        # When the series was asked for and the end it was given (wall clock, seconds).
        self.timelapse_window = (0.0, 0.0)

    def _send(self, topic: str, kind: str, body: dict[str, Any]) -> None:
        self._n += 1
        command_id = f"{kind}-{self._n}"
        with self._tally.lock:
            self._tally.sent[command_id] = kind
        # QoS 1 on a persistent session: paho keeps it while the broker is away.
        self._operator.publish(topic, json.dumps({"id": command_id, **body}), wait=False)

    def _run(self) -> None:
        tick = 0
        until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=self._minutes)
        self.timelapse_window = (time.time(), until.timestamp())
        self._send("camera/control/action", "timelapse", {
            "action": "timelapse", "interval": TIMELAPSE_INTERVAL_S, "until": until.isoformat(),
            "fps": 10,
        })  # fmt: skip
        while not self._stop.wait(0.05):
            tick += 1
            brightness = round(((tick % 40) - 20) / 40, 3)
            self._send("camera/control/settings", "settings", {"set": {"brightness": brightness}})
            if tick % 20 == 0:
                self._send("camera/control/action", "picture", {"action": "picture"})
            if tick % 10 == 0 and not self._tally.record_open():
                self._send(
                    "camera/control/action", "record", {"action": "record", "duration": RECORD_S}
                )
            if tick % 400 == 0:
                self._send("camera/control/action", "stream", {"action": "stream", "op": "restart"})

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Stack:
    root: Path
    broker: Broker
    media: MediaServer
    agent: AgentProcess
    disk: Path | None  # the captures tmpfs, when one could be mounted
    store: ObjectStore | None  # with --with-s3
    faults: list[tuple[float, str]] = field(default_factory=list)
    agent_starts: int = 1
    agent_pids: set[int] = field(default_factory=set)

    def agent_pid(self) -> int | None:
        process = self.agent.process
        return process.pid if process is not None and process.poll() is None else None


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (the run's own directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if text in cmdline and state != "Z":
                    found.append(int(entry.name))
    return found


def fill_disk(disk: Path, hold_s: float) -> None:
    filler = disk / FILLER
    try:
        with filler.open("wb") as handle:
            chunk = b"\0" * (1 << 20)
            while True:
                handle.write(chunk)
                handle.flush()
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
    time.sleep(hold_s)
    filler.unlink(missing_ok=True)


def make_faults(stack: Stack, rng: random.Random) -> dict[str, Callable[[], None]]:
    def restart_broker() -> None:
        stack.broker.stop()
        time.sleep(rng.uniform(0.5, 3))
        stack.broker.start()

    def restart_mediamtx() -> None:
        stack.media.stop()
        time.sleep(rng.uniform(0.5, 2))
        stack.media.start()

    def kill_pusher() -> None:
        pid = stack.agent_pid()
        for child in children_of(pid) if pid else []:
            with contextlib.suppress(OSError):
                if b"ffmpeg" in Path(f"/proc/{child}/cmdline").read_bytes():
                    os.kill(child, signal.SIGKILL)

    def kill_agent() -> None:
        stack.agent.kill()
        time.sleep(rng.uniform(0.5, 2))
        start_agent(stack)

    def restart_agent() -> None:
        stack.agent.stop()
        start_agent(stack)

    def restart_store(store: ObjectStore) -> None:
        store.kill()
        time.sleep(rng.uniform(2, 8))
        store.start()

    faults = {
        "broker restart": restart_broker,
        "MediaMTX restart": restart_mediamtx,
        "pusher SIGKILL": kill_pusher,
        "agent SIGKILL": kill_agent,
        "agent restart": restart_agent,
    }
    if stack.disk is not None:
        disk = stack.disk
        faults["disk full"] = lambda: fill_disk(disk, rng.uniform(2, 5))
    if stack.store is not None:
        store = stack.store
        faults["S3 store SIGKILL"] = lambda: restart_store(store)
    return faults


def start_agent(stack: Stack) -> None:
    stack.agent.start()
    stack.agent_starts += 1
    if (pid := stack.agent_pid()) is not None:
        stack.agent_pids.add(pid)


@contextlib.contextmanager
def running_stack(root: Path, with_s3: bool = False) -> Iterator[Stack]:
    ca = CertificateAuthority(root / "pki")
    ca.init()
    broker = Broker(root / "pki", root / "broker")
    media = MediaServer(root / "mediamtx")
    env = {
        "CAMERA_AGENT_STREAM__RESTART_MIN_S": "0.1",
        "CAMERA_AGENT_STREAM__RESTART_MAX_S": "1",
        "CAMERA_AGENT_MQTT__RECONNECT_MAX_S": "2",
        # Retention keeps 16 MiB of the 96 MiB tmpfs free, removing the oldest captures.
        "CAMERA_AGENT_STORAGE__MIN_FREE_BYTES": str(16 << 20),
    }
    store = None
    if with_s3:
        store = ObjectStore(root / "s3")
        camera = store.add_identity(StoreIdentity.for_camera("cam"))
        env |= store.agent_settings(camera, root / "s3-credentials")
        # Short pauses: an upload the store's outage failed is tried again within the run.
        env |= {"CAMERA_AGENT_UPLOAD__RETRY_MIN_S": "0.5", "CAMERA_AGENT_UPLOAD__RETRY_MAX_S": "4"}
    agent = AgentProcess(broker, root / "agent", media=media, env=env)
    captures = root / "agent" / "captures"
    captures.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(captures)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    broker.start()
    media.start()
    stack = Stack(root, broker, media, agent, captures if mounted else None, store)
    try:
        if store is not None:
            store.start()
            store.create_bucket()
        agent.start()
        if (pid := stack.agent_pid()) is not None:
            stack.agent_pids.add(pid)
        yield stack
    finally:
        agent.stop()
        if store is not None:
            store.stop()
        media.stop()
        broker.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(captures)], check=False)


def drain(operator: Probe, tally: Tally, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            message = operator.messages.get(timeout=min(remaining, 0.2))
        except queue.Empty:
            continue
        tally.take(message)


@dataclass
class Report:
    rows: list[tuple[str, str]]
    failures: list[str]


def run_chaos(root: Path, minutes: float, seed: int, with_s3: bool = False) -> Report:
    rng = random.Random(seed)  # noqa: S311 -- a reproducible schedule, not a secret
    tally = Tally()
    with running_stack(root, with_s3) as stack:
        operator = Probe(stack.broker, "operator", session_expiry_s=3600)
        operator.subscribe("camera/status")
        operator.subscribe("camera/state")
        rss_peak = 0
        faults = make_faults(stack, rng)
        bag: list[str] = []
        try:
            drain(operator, tally, 5)  # the stream comes up
            end = time.monotonic() + minutes * 60
            with Load(operator, tally, minutes) as load:
                while time.monotonic() < end:
                    drain(operator, tally, rng.uniform(6, 12))
                    rss_peak = max(rss_peak, rss_of(stack.agent_pid()))
                    if not bag:  # every kind once, in a random order, then again
                        bag = rng.sample(sorted(faults), len(faults))
                    name = bag.pop()
                    stack.faults.append((time.time(), name))
                    print(f"{time.strftime('%H:%M:%S')} fault: {name}", flush=True)
                    threading.Thread(target=faults[name], daemon=True).start()
                    drain(operator, tally, 1)
                    wait_for_agent(stack, operator, tally)
            settle_deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < settle_deadline and (
                any(tally.outstanding()) or tally.uploads_waiting()
            ):
                drain(operator, tally, 1)
            rss_peak = max(rss_peak, rss_of(stack.agent_pid()))
        finally:
            operator.close()
        log_text = stack.agent.log_text()
        stack.agent.stop()
        holes = series_holes(stack.agent.work_dir / "captures", tally)  # before the unmount
        upload_rows, upload_failures = (
            check_uploads(stack.store, stack.agent.work_dir / "captures", tally)
            if stack.store is not None
            else ([], [])
        )
        # The last run's children die from its death signal, a moment after it; what is
        # still there after a few seconds was left behind.
        deadline = time.monotonic() + 5
        while (leftovers := processes_mentioning(str(root / "agent"))) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
    report = summarize(stack, tally, rss_peak, leftovers, log_text, holes)
    report.rows += upload_rows
    report.failures += upload_failures
    begun, until = load.timelapse_window
    struck = any(name == "disk full" and begun <= at <= until for at, name in stack.faults)
    report.rows.append(("disk full while the timelapse ran", "yes" if struck else "no"))
    return report


def captures_on_disk(captures: Path) -> list[str]:
    """The finished captures left at the end: files at the top of the captures directory (a
    series' frames are in its folder, and go up only when asked for by hand)."""
    return sorted(
        p.name for p in captures.iterdir()
        if p.is_file() and not p.name.startswith(".") and TEMP_MARK not in p.name
        and p.name != FILLER
    )  # fmt: skip


def check_uploads(
    store: ObjectStore, captures: Path, tally: Tally
) -> tuple[list[tuple[str, str]], list[str]]:
    """What reached the store against what the agent said it uploaded."""
    stored = store.objects()
    keys_of = {file: {d["key"] for d in done} for file, done in tally.uploads.items()}
    reported = {key: file for file, keys in keys_of.items() for key in keys}
    two_keys = [file for file, keys in keys_of.items() if len(keys) > 1]
    # An object whose upload's answer was lost (the store killed after storing it), and
    # whose file was then deleted: the agent said so in `upload.dropped`.
    lost_answer = sorted((set(stored) - set(reported)) & tally.dropped_after_attempts)
    stray = sorted(set(stored) - set(reported) - tally.dropped_after_attempts)
    wrong = []
    for file, done in tally.uploads.items():
        last = done[-1]
        if stored.get(last["key"]) != last["bytes"]:
            wrong.append(f"{file}: {stored.get(last['key'])} bytes stored, {last['bytes']} sent")
        elif store.object_sha256(last["key"]) != last["sha256"]:
            wrong.append(f"{file}: the stored bytes' SHA-256 is not the one reported")
    on_disk = captures_on_disk(captures) if captures.is_dir() else []
    not_uploaded = [name for name in on_disk if name not in tally.uploads]
    with tally.lock:
        state = dict(tally.upload_state)
    repeated = sum(len(done) - 1 for done in tally.uploads.values())
    rows = [
        ("upload events", ", ".join(f"{n} {e}" for e, n in sorted(tally.upload_ends.items()))),
        ("uploads done again (same key, after a kill)", str(repeated)),
        ("objects in the bucket / reported / stray", f"{len(stored)} / {len(reported)} / "
                                                     f"{len(stray)}"),
        ("stored, answer lost, file then deleted (said in upload.dropped)", str(len(lost_answer))),
        ("uploaded objects missing or different", str(len(wrong))),
        ("captures on disk / not uploaded", f"{len(on_disk)} / {len(not_uploaded)}"),
        ("uploads still queued at the end", str(state.get("queued", "?"))),
    ]  # fmt: skip
    failures = []
    if stray:
        failures.append(f"objects no upload.done reported: {stray[:10]}")
    if two_keys:
        failures.append(f"captures uploaded under two keys: {two_keys[:10]}")
    if wrong:
        failures.append(f"uploaded objects missing or different: {wrong[:10]}")
    if not_uploaded:
        failures.append(f"captures on disk never uploaded: {not_uploaded[:10]}")
    if state.get("queued") or state.get("uploading"):
        failures.append(f"uploads still queued after settling: {state}")
    return rows, failures


def series_result(tally: Tally) -> dict[str, Any]:
    """The result of the load's timelapse series ({} if it did not succeed)."""
    for job, body in tally.terminal_events.items():
        if tally.kind_of.get(job) == "timelapse":
            result: dict[str, Any] = body["data"].get("result") or {}
            return result
    return {}


def series_holes(captures: Path, tally: Tally) -> list[str]:
    """Frames missing from the finished series' folder (its numbers must run 1..frames),
    unless retention reported the series pruned (then they were removed, not lost)."""
    result = series_result(tally)
    if not result or f"{result.get('folder')}/" in tally.pruned:
        return []
    folder = captures / str(result.get("folder"))
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return [f"{n:06d}.jpg" for n in range(1, int(result.get("frames") or 0) + 1)
            if f"{n:06d}.jpg" not in present]  # fmt: skip


def wait_for_agent(stack: Stack, operator: Probe, tally: Tally) -> None:
    """A fault that restarts the agent runs on its own thread; the next waits for it."""
    for _ in range(100):
        if stack.agent.process is not None:
            return
        drain(operator, tally, 0.1)


def rss_of(pid: int | None) -> int:
    if pid is None:
        return 0
    with contextlib.suppress(OSError):  # the agent was just killed by a fault
        return process_usage(pid)[1]
    return 0


def summarize(
    stack: Stack,
    tally: Tally,
    rss_peak: int,
    leftovers: list[int],
    log_text: str,
    holes: list[str],
) -> Report:
    unanswered, open_jobs = tally.outstanding()
    # A QoS 1 answer whose acknowledgement a broker restart lost comes again, the same
    # message (MQTT's at-least-once); a second, different answer would be a second run.
    twice = [
        i for i, answers in tally.answers.items()
        if len({(a["event"], a["ts"]) for a in answers if not a.get("duplicate")}) > 1
    ]  # fmt: skip
    answers_again = sum(
        len(answers) - len({json.dumps(a, sort_keys=True) for a in answers})
        for answers in tally.answers.values()
    )
    two_outcomes = [j for j, ends in tally.terminal.items() if len(ends) > 1]
    redelivered = sum(n - 1 for n in tally.deliveries.values() if n > 1)
    outcomes = Counter(e["event"] for e in tally.terminal_events.values())
    codes = Counter(
        e.get("error", {}).get("code") for e in tally.terminal_events.values() if not e["ok"]
    )
    requested = kept = 0.0
    for job, body in tally.terminal_events.items():
        if tally.kind_of.get(job) != "record":
            continue
        requested += RECORD_S
        result = body["data"].get("result") or {}
        kept += float(result.get("duration_s") or 0)
    causes = Counter(
        gap.get("cause", "?")
        for body in tally.terminal_events.values()
        for gap in ((body["data"].get("result") or {}).get("gaps") or [])
    )
    series = [body for job, body in tally.terminal_events.items()
              if tally.kind_of.get(job) == "timelapse"]  # fmt: skip
    series_facts = series_result(tally)
    fault_counts = Counter(name for _, name in stack.faults)
    rows = [
        ("faults", ", ".join(f"{n} {name}" for name, n in sorted(fault_counts.items())) or "none"),
        ("commands sent", str(len(tally.sent))),
        ("answered", str(len(tally.sent) - len(unanswered))),
        ("answered twice (not flagged duplicate)", str(len(twice))),
        ("answers redelivered (same message)", str(answers_again)),
        ("jobs started", str(len(tally.job_of))),
        ("terminal events delivered", str(len(tally.job_of) - len(open_jobs))),
        ("terminal outcomes", ", ".join(f"{n} {e}" for e, n in sorted(outcomes.items()))),
        ("failure codes", ", ".join(f"{n} {c}" for c, n in sorted(codes.items(), key=str))),
        ("jobs with two different ends", str(len(two_outcomes))),
        ("terminal events redelivered (same message)", str(redelivered)),
        ("recording s requested / kept / lost", f"{requested:.0f} / {kept:.1f} / "
                                                f"{max(0.0, requested - kept):.1f}"),
        ("timelapse: outcome / frames / ticks missed / holes in the numbering",
         f"{series[0]['event'] if series else 'none'} / {series_facts.get('frames', 0)} / "
         f"{series_facts.get('missed', 0)} / {len(holes)}"),
        ("gaps by cause", ", ".join(f"{n} {c}" for c, n in sorted(causes.items())) or "none"),
        ("agent starts", str(stack.agent_starts)),
        ("peak agent RSS MiB", f"{rss_peak / 2**20:.1f}"),
        ("largest retained state KiB", f"{tally.max_state_bytes / 1024:.1f}"),
        ("internal_error published", str(len(tally.internal_errors))),
        ("processes left behind", str(len(leftovers))),
        ("captures disk faults", "on (tmpfs)" if stack.disk else "off (no tmpfs mount)"),
    ]  # fmt: skip
    failures = []
    if unanswered:
        failures.append(f"{len(unanswered)} commands never answered: {unanswered[:10]}")
    if twice:
        failures.append(f"answered twice without the duplicate flag: {twice[:10]}")
    if open_jobs:
        failures.append(f"jobs without a terminal event: {open_jobs[:10]}")
    if two_outcomes:
        failures.append(f"jobs that ended twice: {two_outcomes[:10]}")
    if tally.internal_errors:
        failures.append(f"internal_error published: {tally.internal_errors[:3]}")
    if tally.max_state_bytes > STATE_LIMIT_BYTES:
        failures.append(f"retained state reached {tally.max_state_bytes} bytes")
    if leftovers:
        failures.append(f"processes left behind: {leftovers}")
    if holes:
        failures.append(f"the timelapse series lacks frames {holes[:10]}")
    if "Traceback" in log_text:
        failures.append("the agent logged a traceback (see its log)")
    return Report(rows, failures)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--check", action="store_true", help="exit 1 if an invariant broke")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (logs)")
    parser.add_argument(
        "--with-s3", action="store_true", help="upload to a SeaweedFS store, which faults kill"
    )
    args = parser.parse_args(argv)
    s3 = ", uploads to SeaweedFS" if args.with_s3 else ""
    print(f"chaos: {args.minutes:g} min, seed {args.seed}{s3}", flush=True)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run_chaos(args.keep.resolve(), args.minutes, args.seed, args.with_s3)
    else:
        with tempfile.TemporaryDirectory(prefix="camera-chaos-") as tmp:
            report = run_chaos(Path(tmp), args.minutes, args.seed, args.with_s3)
    width = max(len(name) for name, _ in report.rows)
    print()
    for name, value in report.rows:
        print(f"{name:<{width}}  {value}")
    for failure in report.failures:
        print(f"FAILED: {failure}")
    return 1 if args.check and report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
