"""The retained state stays small however busy the camera is; the rest is the `jobs` action."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import CommandError
from agent.jobs.actions import JobActions
from agent.jobs.captures import Captures
from agent.jobs.files import FileActions
from agent.jobs.ledger import JobLedger
from agent.jobs.manager import HISTORY_MAX, STATE_FINISHED, JobContext, JobKind, JobManager
from agent.protocol import parse_action


def manager() -> tuple[JobManager, asyncio.Event, asyncio.Event]:
    """A manager of quick pictures; the events: let held jobs end, and a job has finished."""
    release = asyncio.Event()
    finished = asyncio.Event()

    def factory(params: dict[str, Any]) -> Any:
        async def run(context: JobContext) -> dict[str, Any]:
            if params.get("hold"):
                await release.wait()
            return {"path": f"picture-{params['n']}.jpg"}

        return run

    def report(job: Any, name: str, ok: bool, message: str) -> None:
        if name == "job.succeeded":
            finished.set()

    jobs = JobManager({"picture": JobKind(factory, 5)}, report, lambda: None)
    return jobs, release, finished


async def finish_pictures(jobs: JobManager, finished: asyncio.Event, count: int) -> None:
    for n in range(count):
        finished.clear()
        jobs.submit("picture", {"n": n}, None)
        await asyncio.wait_for(finished.wait(), 5)


async def test_the_state_lists_the_running_jobs_and_the_last_few_finished() -> None:
    jobs, release, finished = manager()
    await finish_pictures(jobs, finished, 600)  # a picture every 6 s for an hour
    running = jobs.submit("picture", {"n": "live", "hold": True}, None)
    snapshot = jobs.snapshot()
    assert len(snapshot) == STATE_FINISHED + 1
    assert snapshot[0]["id"] == running.id  # the running one first
    assert snapshot[-1]["result"]["path"] == "picture-599.jpg"  # the newest finished
    assert len(json.dumps(snapshot)) < 16 * 1024  # far below the broker's 256 KiB
    release.set()


async def test_the_history_is_paged_newest_first_and_bounded() -> None:
    jobs, _, finished = manager()
    await finish_pictures(jobs, finished, HISTORY_MAX + 50)
    actions = JobActions(jobs)
    answer = await actions.history(parse_action("jobs 0 3"))
    assert answer.data["total"] == HISTORY_MAX  # the oldest beyond the bound were forgotten
    assert [j["result"]["path"] for j in answer.data["jobs"]] == [
        f"picture-{n}.jpg" for n in (HISTORY_MAX + 49, HISTORY_MAX + 48, HISTORY_MAX + 47)
    ]
    last = await actions.history(
        parse_action(json.dumps({"action": "jobs", "offset": HISTORY_MAX - 1}))
    )
    assert len(last.data["jobs"]) == 1
    beyond = await actions.history(parse_action(f"jobs {HISTORY_MAX} 10"))
    assert beyond.data["jobs"] == [] and "no jobs from" in beyond.message


@pytest.mark.parametrize(
    "command", ["jobs -1", "jobs 0 0", "jobs 0 51", "jobs a", '{"action": "jobs", "limit": true}']
)
def test_bad_pages_are_refused(command: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_action(command)
    assert refused.value.code == "invalid_argument"


async def test_a_job_the_agent_died_in_is_reported_failed_interrupted_at_the_next_start(
    tmp_path: Path,
) -> None:
    events: list[tuple[str, str, dict[str, Any] | None]] = []
    succeeded = asyncio.Event()

    def report(job: Any, name: str, ok: bool, message: str) -> None:
        events.append((job.id, name, job.error))
        if name == "job.succeeded":
            succeeded.set()

    def holding(params: dict[str, Any]) -> Any:
        async def run(context: JobContext) -> dict[str, Any]:
            await asyncio.Event().wait()  # still running when the agent "dies"
            return {}

        return run

    def quick(params: dict[str, Any]) -> Any:
        async def run(context: JobContext) -> dict[str, Any]:
            return {"path": "picture.jpg"}

        return run

    ledger_dir = tmp_path / "running"
    first_life = JobManager(
        {"picture": JobKind(holding, 5), "record": JobKind(holding, 1, True, own_journal=True)},
        report, lambda: None, JobLedger(ledger_dir),
    )  # fmt: skip
    lost = first_life.submit("picture", {"quality": 90}, "req-1")
    first_life.submit("record", {}, "req-2")  # recovered by its own journal, not reported here
    done = JobManager({"picture": JobKind(quick, 5)}, report, lambda: None, JobLedger(ledger_dir))
    finished = done.submit("picture", {}, None)
    await asyncio.wait_for(succeeded.wait(), 5)  # a finished job leaves no entry behind
    assert (finished.id, "job.succeeded", None) in events

    # The process is gone (nothing of the first life runs on); a new one starts.
    second_life = JobManager({"picture": JobKind(quick, 5)}, report, lambda: None,
                             JobLedger(ledger_dir))  # fmt: skip
    (reported,) = second_life.report_interrupted()
    assert reported.error is not None
    assert reported.id == lost.id and reported.request_id == "req-1"
    assert events[-1] == (lost.id, "job.failed", {"code": "interrupted",
                                                  "detail": reported.error["detail"]})  # fmt: skip
    assert second_life.snapshot()[0]["state"] == "failed"
    assert second_life.report_interrupted() == []  # once
    assert list(ledger_dir.iterdir()) == []


async def test_stop_cancels_a_running_picture_and_says_so() -> None:
    events: list[tuple[str, str]] = []
    ended = asyncio.Event()

    def report(job: Any, name: str, ok: bool, message: str) -> None:
        events.append((name, message))
        if name == "job.cancelled":
            ended.set()

    def holding(params: dict[str, Any]) -> Any:
        async def run(context: JobContext) -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        return run

    jobs = JobManager({"picture": JobKind(holding, 5)}, report, lambda: None)
    job = jobs.submit("picture", {}, "p1")
    await asyncio.sleep(0)  # running
    answer = await JobActions(jobs).stop(parse_action(f"stop {job.id}"))
    assert answer.event == "job.stopping"
    await asyncio.wait_for(ended.wait(), 5)
    assert events[-1] == ("job.cancelled", f"picture {job.id} cancelled")
    assert jobs.snapshot()[0]["state"] == "cancelled"
    with pytest.raises(CommandError, match="already cancelled"):
        jobs.stop(job.id)


async def test_a_file_a_running_job_uses_cannot_be_deleted(tmp_path: Path) -> None:
    def holding(params: dict[str, Any]) -> Any:
        async def run(context: JobContext) -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        return run

    captures = Captures(tmp_path)
    (tmp_path / "record-a.mp4").write_bytes(b"video")
    ended = asyncio.Event()

    def report(job: Any, name: str, ok: bool, message: str) -> None:
        if name == "job.cancelled":
            ended.set()

    jobs = JobManager({"trim": JobKind(holding, 1)}, report, lambda: None)
    trimming = jobs.submit("trim", {"file": "record-a.mp4"}, None)
    files = FileActions(captures, jobs)
    with pytest.raises(CommandError) as refused:
        await files.delete(parse_action("delete record-a.mp4"))
    assert refused.value.code == "busy"
    assert (tmp_path / "record-a.mp4").exists()
    jobs.stop(trimming.id)
    await asyncio.wait_for(ended.wait(), 5)
    answer = await files.delete(parse_action("delete record-a.mp4"))
    assert answer.data == {"file": "record-a.mp4", "size": 5}
    assert not (tmp_path / "record-a.mp4").exists()
