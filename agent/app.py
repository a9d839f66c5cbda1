"""Builds the agent's components, runs them in one TaskGroup, and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from agent.atomicfile import sweep_temporaries
from agent.camera.agent_controls import WithAgentControls
from agent.camera.base import CameraBackend
from agent.camera.detect import find_v4l2_capture, libcamera_cameras
from agent.camera.picamera2_backend import Picamera2Camera
from agent.camera.selftest import Step, TourStream, run_tour
from agent.camera.testsrc import TestPatternCamera
from agent.camera.v4l2 import V4l2Camera
from agent.config import AgentConfig
from agent.controls import CameraControls, ControlStore
from agent.errors import CameraError, CommandError, ConfigError, ErrorCode
from agent.health import HealthReport, health_path
from agent.homeassistant import Discovery, birth_topic
from agent.jobs.actions import JobActions
from agent.jobs.captures import Captures
from agent.jobs.files import FileActions
from agent.jobs.jpegdata import Jpeg
from agent.jobs.ledger import JobLedger
from agent.jobs.manager import JobKind, JobManager
from agent.jobs.model import Job
from agent.jobs.picture import load_encoder, picture_runner
from agent.jobs.record import Recorder, RecordJournal
from agent.jobs.retention import Retention, StorageLimits
from agent.jobs.timelapse import SeriesJournal, Timelapse
from agent.jobs.trim import Trimmer
from agent.memory import release_free_heap
from agent.messaging import InboundMessage
from agent.motion.service import MotionHooks, MotionService
from agent.mqtt.client import BrokerLink, quiet_closed_socket_races
from agent.mqtt.tls import certificate_identity, client_context
from agent.mqtt.topics import Topics
from agent.process import CommandRunner, run_command
from agent.protocol import ActionCommand
from agent.router import Answer, CommandRouter
from agent.status import AgentStatus, HealthSource
from agent.stream.mediamtx import MediaMtxApi, MediaMtxPlayback
from agent.stream.outages import STREAM_RESTART
from agent.stream.supervisor import (
    StreamReport,
    StreamState,
    StreamSupervisor,
    SupervisorSettings,
)
from agent.stream.target import StreamTarget
from agent.upload import Uploader, read_ca, read_credentials

log = logging.getLogger(__name__)

# Job kinds that write captures: refused up front when the disk is nearly full, and followed
# by a retention pass when they end.
WRITING_JOBS = frozenset({"picture", "record", "trim", "timelapse"})

# How long a stop waits for running commands before answering them "the agent is stopping".
COMMAND_GRACE_S = 3.0


async def select_backend(
    config: AgentConfig, dev: Path = Path("/dev"), run: CommandRunner = run_command
) -> tuple[CameraBackend, list[str]]:
    """The configured camera backend, and warnings for `state` when it is a fallback."""
    cam = config.camera
    rate = config.motion.fps
    if cam.backend == "testsrc":
        return TestPatternCamera(cam.width, cam.height, cam.fps, rate), []
    if cam.backend == "v4l2":
        path = cam.device or "/dev/video0"
        return V4l2Camera(path, cam.width, cam.height, cam.fps, run, rate), []
    if cam.backend == "picamera2" or (cam.backend == "auto" and libcamera_cameras()):
        camera = Picamera2Camera(_camera_number(cam.device), cam.width, cam.height, cam.fps, rate)
        return camera, []
    device, notes = await find_v4l2_capture(dev, run)
    if device is not None:
        log.info("auto-detected V4L2 camera %s", device)
        return V4l2Camera(device, cam.width, cam.height, cam.fps, run, rate), notes
    warning = "no camera found; streaming the test pattern"
    return TestPatternCamera(cam.width, cam.height, cam.fps, rate), [*notes, warning]


def _camera_number(device: str | None) -> int:
    if device is None:
        return 0
    if not device.isdigit():
        raise ConfigError(f"camera.device = {device!r}: picamera2 wants a camera number (0, 1...)")
    return int(device)


async def selftest(config: AgentConfig) -> list[Step]:
    """`camera-agent selftest`: the configured camera through the tour, streaming into the
    configured MediaMTX path (which must be up, as for the agent)."""
    backend, warnings = await select_backend(config)
    steps = [Step("camera", backend.name != "testsrc" or config.camera.backend == "testsrc",
                  "; ".join(warnings) or f"backend {backend.name}")]  # fmt: skip
    return steps + await run_tour(backend, TourStream(stream_target(config)))


class AgentApp:
    """Owns the components; `run` starts them in order and stops them in reverse."""

    def __init__(self, config: AgentConfig, camera: CameraBackend, warnings: list[str]) -> None:
        """Every component, made with what it depends on, in dependency order."""
        self._config = config
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        state_dir = config.storage.state_dir
        # The camera's controls and the agent's own (motion), as one set.
        self.backend = backend = WithAgentControls(camera, config.motion.enabled, self._set_motion)
        self.topics = topics = Topics(config.mqtt.base_topic)
        # First: it says which certificate file is missing, in words a user can act on.
        tls = client_context(config.mqtt.ca, config.mqtt.cert, config.mqtt.key)
        identity = certificate_identity(config.mqtt.cert)
        for warning in warnings:
            log.warning("%s", warning)
        ha = config.homeassistant
        birth = (birth_topic(ha.prefix),) if ha.discovery else ()
        self.link = BrokerLink(
            config.mqtt,
            tls,
            identity,
            subscriptions=(topics.settings, topics.action, topics.state, *birth),
            will_topic=topics.availability,
        )
        self.discovery = (
            Discovery(
                ha.prefix,
                identity,
                config.camera.id,
                topics,
                self.link,
                ha.record_button_s,
                state_dir / "discovery.json",
                configuration_url=config.storage.public_url,
            )
            if ha.discovery
            else None
        )
        self._discovery_sent = False
        self._encoder_loaded = False
        self._settled = False
        # "Something in state or controls changed": set by the stream, the jobs and the
        # controls, awaited by AgentStatus (made last, with what it reports on), which
        # republishes.
        changes = asyncio.Event()
        self.stream = build_supervisor(config, backend, self._report_stream, changes.set)
        self.controls = CameraControls(
            backend, ControlStore(state_dir / "controls.json"), self.stream, changes.set
        )
        storage = config.storage
        self.retention = Retention(
            storage.captures_dir,
            StorageLimits(storage.max_bytes, storage.max_age_days, storage.min_free_bytes),
            self._captures_in_use,
            self._report_storage,
            changes.set,
            not_uploaded=self._not_uploaded,
        )
        self.captures = Captures(storage.captures_dir, storage.public_url, self.retention)
        if config.upload.enabled:
            try:  # at start, in words: not at the first upload, hours later
                read_credentials(config.upload)
                read_ca(config.upload)
            except ValueError as err:
                raise ConfigError(f"invalid configuration: {err}") from None
        self.uploads = Uploader(
            config.upload,
            config.camera.id,
            self.captures,
            state_dir / "uploads",
            self._report_upload,
            changes.set,
            self._captures_in_use,
        )
        password = config.stream.password.get_secret_value()
        self.recorder = Recorder(
            self.stream,
            MediaMtxPlayback(config.stream.playback_url, config.stream.username, password),
            stream_target(config).recorded_path,
            self.captures,
            RecordJournal(state_dir / "jobs"),
            config.jobs.max_record_s,
            config.jobs.max_preroll_s,
        )
        self.timelapse = Timelapse(
            self.stream,
            self.captures,
            SeriesJournal(state_dir / "timelapse"),
            self.controls.change,
            backend.auto_lock_plan,
            config.jobs.timelapse_min_interval_s,
        )
        self.jobs = JobManager(
            {
                "picture": JobKind(
                    picture_runner(
                        backend,
                        self.stream,
                        self.captures,
                        config.mqtt.max_picture_bytes,
                        self._show_picture,
                    ),
                    config.jobs.picture_limit,
                ),
                "record": JobKind(
                    self.recorder.runner,
                    config.jobs.record_limit,
                    stop_finishes=True,
                    own_journal=True,
                ),
                # One at a time: an exact trim keeps a core busy.
                "trim": JobKind(Trimmer(self.captures).runner, 1),
                "timelapse": JobKind(
                    self.timelapse.runner,
                    config.jobs.timelapse_limit,
                    stop_finishes=True,
                    own_journal=True,
                    suspends=True,
                ),
            },
            self._report_job,
            changes.set,
            JobLedger(state_dir / "running"),
            before_success=self.uploads.queue_job,
        )
        self.motion = MotionService(
            config.motion,
            backend.motion_mask,
            MotionHooks(
                frames=self.stream.motion_frames,
                report=self._report_motion,
                retain=self._retain_motion,
                changed=changes.set,
                snapshot=self._motion_snapshot,
                record_start=self._motion_clip,
                record_stop=self._stop_motion_clip,
                clip_status=self._motion_clip_status,
            ),
            state_dir / "motion-regions.json",
        )
        self.status = AgentStatus(
            config.camera.id,
            identity,
            topics,
            self.link,
            backend,
            changes,
            stream_snapshot=self.stream.snapshot,
            jobs_snapshot=self.jobs.snapshot,
            storage_snapshot=self.retention.snapshot,
            motion_snapshot=self.motion.snapshot,
            upload_snapshot=self.uploads.snapshot,
            health=HealthSource(health_path(state_dir), self._health_report),
            warnings=list(warnings),
            status_format=config.mqtt.status_format,
        )
        job_actions = JobActions(self.jobs, self.retention.ensure_room)
        file_actions = FileActions(
            self.captures, self.jobs, self.uploads if config.upload.enabled else None
        )
        self.router = CommandRouter(
            config.camera.id,
            topics,
            self.link,
            self.controls,
            actions={
                "stream": StreamActions(
                    self.stream, config.stream.start_timeout_s, self.controls.pipeline
                ).handle,
                "picture": job_actions.submitter("picture"),
                "record": job_actions.submitter("record"),
                "trim": job_actions.submitter("trim"),
                "timelapse": job_actions.submitter("timelapse"),
                "stop": job_actions.stop,
                "jobs": job_actions.history,
                "files": file_actions.listing,
                "delete": file_actions.delete,
                "upload": file_actions.upload,
                "motion": self._configure_motion,
            },
            max_payload_bytes=config.mqtt.max_payload_bytes,
            recording=self.recorder.recording,
            status_format=config.mqtt.status_format,
        )

    def request_stop(self) -> None:
        self._stop.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _show_picture(self, preview: Jpeg | None, result: dict[str, Any]) -> None:
        # Through the app: the pictures' runner is made before the status it reports to.
        await self.status.show_picture(preview, result)

    def _health_report(self) -> HealthReport:
        return HealthReport(
            time.time(), self.link.connected.is_set(), self.stream.wanted, str(self.stream.state)
        )

    def _report_stream(self, name: str, ok: bool, message: str, data: dict[str, Any]) -> None:
        if name == "stream.online" and not self._encoder_loaded:
            self._encoder_loaded = True
            self._spawn(asyncio.to_thread(load_encoder))
        error = (
            None if ok else CommandError(ErrorCode.STREAM_ERROR, message.removeprefix("ERROR: "))
        )
        self._spawn(self.status.emit(name, ok, message, data, error=error))
        self.status.mark_changed()

    async def _configure_motion(self, command: ActionCommand) -> Answer:
        regions = await self.motion.set_regions(command.params)
        zones = ", ".join(zone["name"] for zone in regions["zones"]) or "the whole picture"
        return Answer(
            "motion.configured",
            f"SUCCESS: motion is looked for in {zones}, {len(regions['mask'])} mask polygon(s)"
            " left out; learning the scene anew",
            regions,
        )

    async def _set_motion(self, enabled: bool) -> None:
        # Through the app: the controls are made before the motion service they switch.
        await self.motion.set_enabled(enabled)

    def _report_motion(self, name: str, message: str, data: dict[str, Any]) -> None:
        self._spawn(self.status.emit(name, True, message, data))

    async def _motion_snapshot(self) -> dict[str, Any]:
        """A picture job, as `picture` would queue it (BASE/picture, the captures, its url)."""
        try:
            await self.retention.ensure_room()
            job = self.jobs.submit("picture", {"quality": 90, "sidecar": False}, None, "motion")
        except CommandError as err:
            log.warning("no motion snapshot: %s", err.detail)
            return {"error": err.detail}
        return {"job": job.id}

    async def _motion_clip(self, preroll_s: float) -> dict[str, Any]:
        """A recording until stopped, reaching back `preroll_s` (the record job's machinery:
        MediaMTX playback, gaps reported, recovered after a kill)."""
        preroll = min(preroll_s, self._config.jobs.max_preroll_s)
        try:
            await self.retention.ensure_room()
            job = self.jobs.submit(
                "record", {"duration": None, "preroll": round(preroll, 3)}, None, "motion"
            )
        except CommandError as err:
            return {"error": err.detail}
        return {"job": job.id}

    def _stop_motion_clip(self, job_id: str) -> None:
        with contextlib.suppress(CommandError):  # it ended already (failed, or stopped)
            self.jobs.stop(job_id)

    def _motion_clip_status(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.find(job_id)
        if job is None:
            return {"state": "unknown"}
        result = job.result or {}
        return {"state": str(job.state), "path": result.get("path"), "url": result.get("url")}

    async def _retain_motion(self, payload: bytes) -> None:
        await self.link.publish(self.topics.motion, payload, retain=True)

    def _captures_in_use(self) -> set[str]:
        # Through the app: retention is made before the jobs whose files it must spare.
        return self.jobs.files_in_use()

    def _not_uploaded(self) -> set[str]:
        # Through the app: retention is made before the uploads it must spare.
        return self.uploads.pending()

    def _report_upload(self, name: str, ok: bool, message: str, data: dict[str, Any]) -> None:
        error = None if ok else CommandError(ErrorCode.IO_ERROR, message.removeprefix("ERROR: "))
        self._spawn(self.status.emit(name, ok, message, data, error=error))

    def _report_storage(self, name: str, ok: bool, message: str, data: dict[str, Any]) -> None:
        if data.get("not_uploaded"):
            self.uploads.forget(data["not_uploaded"])
        error = None if ok else CommandError(ErrorCode.IO_ERROR, message.removeprefix("ERROR: "))
        self._spawn(self.status.emit(name, ok, message, data, error=error))

    def _report_job(self, job: Job, name: str, ok: bool, message: str) -> None:
        error = None
        if job.error is not None:
            error = CommandError(ErrorCode(job.error["code"]), job.error["detail"])
        report = self.status.emit(
            name, ok, message, job.to_json(),
            command_id=job.request_id, job=job.id, error=error, by=job.requested_by,
        )  # fmt: skip
        self._spawn(report)
        if job.state.finished and job.kind in WRITING_JOBS:
            self._spawn(self.retention.check())

    async def _on_connected(self) -> None:
        await self.status.publish_connected()
        if self.discovery is not None and not self._discovery_sent:
            self._discovery_sent = True  # retained: once per start, and when Home Assistant asks
            await self._publish_discovery()
        if not self._settled:
            self._settled = True
            release_free_heap()  # start-up is over: see memory.py

    async def _publish_discovery(self) -> None:
        if self.discovery is None:
            return
        count = await self.discovery.publish(self.backend.descriptors(), self.backend.info())
        log.info("published %d Home Assistant discovery configs", count)

    async def _on_message(self, message: InboundMessage) -> None:
        if self.discovery is not None and message.topic == self.discovery.birth_topic:
            message.done()
            if message.payload == b"online":  # Home Assistant (re)started: it wants them again
                self._spawn(self._publish_discovery())
            return
        if message.topic == self.topics.state:
            message.done()
            if self.status.is_twin_state(message.payload):
                self.link.report_twin()
            return
        await self.router.submit(message)

    async def _recover_jobs(self) -> None:
        """Finalize recordings a killed agent left, and report the other jobs it was running
        as interrupted, once their events can reach the broker."""
        await self.link.connected.wait()
        self.jobs.report_interrupted()
        for job, runner in [*self.recorder.recover(), *self.timelapse.recover()]:
            self.jobs.adopt(job, runner)

    async def run(self) -> None:
        quiet_closed_socket_races(asyncio.get_running_loop())
        self.captures.ensure()
        for leftover in self.captures.sweep_partials():
            log.warning("removed %s, left unfinished by an earlier run", leftover)
        state_dir = self._config.storage.state_dir
        for directory in (
            state_dir,
            state_dir / "jobs",
            state_dir / "running",
            state_dir / "timelapse",
        ):
            for leftover in sweep_temporaries(directory):
                log.warning("removed %s, a write an earlier run did not finish", leftover)
        # Before retention: what waits for its upload is spared.
        await asyncio.to_thread(self.uploads.start)
        # Before anything writes: old captures go first (max_age_days), and the index is built.
        await self.retention.start()
        await self.backend.start()
        await self.controls.restore()
        try:
            async with asyncio.TaskGroup() as tasks:
                link_task = tasks.create_task(
                    self.link.run(self._on_connected, self._on_message), name="mqtt"
                )
                status_task = tasks.create_task(self.status.run(), name="status")
                stream_task = tasks.create_task(self.stream.run(), name="stream")
                if self._config.stream.autostart:
                    self.stream.start()
                recover_task = tasks.create_task(self._recover_jobs(), name="recover")
                retention_task = tasks.create_task(self.retention.run(), name="retention")
                motion_task = tasks.create_task(self.motion.run(), name="motion")
                upload_task = tasks.create_task(self.uploads.run(), name="upload")
                await self._stop.wait()
                log.info("stopping")
                recover_task.cancel()  # still waiting for a broker that never came
                retention_task.cancel()
                motion_task.cancel()
                upload_task.cancel()  # an upload cut short is in the journal: the next start
                await self.motion.stop()
                await self.router.close(COMMAND_GRACE_S)
                await self.jobs.shutdown()
                if self._background:  # job ends and stream events on their way to the outbox
                    await asyncio.wait(set(self._background), timeout=COMMAND_GRACE_S)
                stream_task.cancel()  # its cleanup stops the pusher's process group
                status_task.cancel()
                if self.link.connected.is_set():
                    await self.status.flush()
                    await self.status.publish_offline()
                    await self.link.drain()
                link_task.cancel()
        finally:
            await self.uploads.stop()
            await self.controls.store.close()
            self.status.write_stopped_health()
            await self.backend.stop()


def stream_target(config: AgentConfig) -> StreamTarget:
    """Where the agent publishes: the MediaMTX path, with its publish credentials."""
    s = config.stream
    password = s.password.get_secret_value()
    return StreamTarget(s.url, s.username, password, s.rtsp_transport, s.record_path or None)


def build_supervisor(
    config: AgentConfig,
    backend: CameraBackend,
    report: StreamReport,
    changed: Callable[[], None],
) -> StreamSupervisor:
    s = config.stream
    return StreamSupervisor(
        backend.start_pusher,
        MediaMtxApi(s.api_url, s.username, s.password.get_secret_value()),
        stream_target(config),
        SupervisorSettings(
            restart_min_s=s.restart_min_s,
            restart_max_s=s.restart_max_s,
            start_timeout_s=s.start_timeout_s,
            stall_timeout_s=s.stall_timeout_s,
        ),
        report,
        changed,
    )


class StreamActions:
    """`stream start|stop|restart`: on-demand streaming saves CPU when nobody watches.

    Each takes the pipeline lock only to change what the supervisor wants (in arrival order
    with control changes); waiting for the stream to come up or go down happens outside it.
    """

    def __init__(self, stream: StreamSupervisor, timeout_s: float, pipeline: asyncio.Lock) -> None:
        self._stream = stream
        self._timeout_s = timeout_s
        self._pipeline = pipeline

    async def handle(self, command: ActionCommand) -> Answer:
        op = command.params["op"]
        url = self._stream.snapshot()["url"]
        if op == "stop":
            async with self._pipeline:
                self._stream.stop()
            try:
                await self._stream.stopped()
            except TimeoutError:
                raise CommandError(
                    ErrorCode.STREAM_ERROR, "the stream was asked to stop but has not stopped yet"
                ) from None
            return Answer("stream.stopped", "SUCCESS: stream stopped", {"url": url})
        began = time.monotonic()
        async with self._pipeline:
            online = self._stream.state is StreamState.ONLINE
            if op == "start" and self._stream.wanted and online:
                return Answer(
                    "stream.started",
                    f"SUCCESS: stream already online at {url}; nothing changed",
                    {"url": url, "downtime_s": 0.0, "already": True},
                )
            restarted = None
            if op == "restart" and online:
                try:
                    restarted = await self._stream.restart(cause=STREAM_RESTART)
                except CameraError as err:
                    raise CommandError(ErrorCode.STREAM_ERROR, str(err)) from err
            else:
                self._stream.start()
        if restarted is None:
            try:
                await self._stream.wait_online(self._timeout_s + 5)
            except TimeoutError:
                raise CommandError(
                    ErrorCode.STREAM_ERROR,
                    f"stream did not come online: {self._stream.last_error or 'timeout'}",
                ) from None
        downtime = time.monotonic() - began if restarted is None else restarted
        verb = "restarted" if op == "restart" else "started"
        return Answer(
            f"stream.{verb}",
            f"SUCCESS: stream {verb} at {url} in {downtime:.2f} s",
            {"url": url, "downtime_s": round(downtime, 3)},
        )


async def run_agent(config: AgentConfig) -> None:
    app = AgentApp(config, *await select_backend(config))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, app.request_stop)
    await app.run()
