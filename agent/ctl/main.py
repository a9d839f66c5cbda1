"""`camera-ctl`: send a command to one camera or to every camera, wait, print, exit non-zero on
any error.

    camera-ctl [--camera ID | --all] set brightness 0.3 contrast 1.2
    camera-ctl picture [--download DIR]
    camera-ctl record 10 [--preroll 2] [--wait]
    camera-ctl stop [JOB]
    camera-ctl trim FILE START END [--exact] [--replace] [--wait]
    camera-ctl stream start|stop|restart
    camera-ctl controls | state | jobs | files [PREFIX]
    camera-ctl watch [--json] [--count N]
    camera-ctl list

Exit status: 0 when every camera succeeded; 1 when one answered with an error, did not answer,
or its job failed (the error code and detail are printed); 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import queue
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from agent.ctl.config import CtlConfig, CtlConfigError, load_ctl_config
from agent.ctl.session import (
    OFFLINE_GRACE_S,
    CtlError,
    Exchange,
    Message,
    Request,
    Session,
    report_topics,
)

ANSWER_TIMEOUT_S = 10.0
PICTURE_TIMEOUT_S = 60.0
TRIM_TIMEOUT_S = 900.0
RECORD_MARGIN_S = 120.0  # beyond its length: the cut from MediaMTX and the probe of the file
DOWNLOAD_TIMEOUT_S = 60.0


def parse_value(text: str) -> Any:
    """A control value as typed: a number, true/false, else the word (a menu item)."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def settings_body(pairs: list[str]) -> dict[str, Any]:
    if not pairs or len(pairs) % 2:
        raise CtlConfigError("set takes NAME VALUE pairs: set brightness 0.3 contrast 1.2")
    return {"set": {pairs[i]: parse_value(pairs[i + 1]) for i in range(0, len(pairs), 2)}}


class Output:
    """Lines for people, or one JSON object per line with --json."""

    def __init__(self, as_json: bool, many: bool, out: TextIO, err: TextIO) -> None:
        self.as_json, self.many, self.out, self.err = as_json, many, out, err
        self._progress_shown = False

    def label(self, camera: str | None) -> str:
        return f"{camera}: " if self.many and camera else ""

    def line(self, text: str) -> None:
        self._clear_progress()
        print(text, file=self.out, flush=True)

    def error(self, camera: str | None, code: str, detail: str) -> None:
        self._clear_progress()
        print(f"{self.label(camera)}error {code}: {detail}", file=self.err, flush=True)

    def progress(self, request: Request, values: dict[str, Any]) -> None:
        """On one terminal line that each update overwrites; nothing when not a terminal."""
        if self.as_json or not self.err.isatty():
            return
        shown = ", ".join(f"{k} {v}" for k, v in values.items() if v is not None and k != "file")
        print(f"\r\x1b[K{self.label(request.camera)}{request.job_id}: {shown}", end="",
              file=self.err, flush=True)  # fmt: skip
        self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            print("\r\x1b[K", end="", file=self.err, flush=True)
            self._progress_shown = False


def describe_result(result: dict[str, Any]) -> str:
    files = result.get("files") or ([result] if result.get("path") else [])
    parts = []
    for f in files:
        facts = [f"{f['size']} bytes"] if f.get("size") is not None else []
        facts += [str(f[k]) for k in ("resolution", "codec") if f.get(k)]
        if f.get("duration_s"):
            facts.append(f"{f['duration_s']:g} s")
        parts.append(f"{f['path']} ({', '.join(facts)})" + (f" {f['url']}" if f.get("url") else ""))
    return "; ".join(parts)


def report(request: Request, output: Output, download: Path | None, config: CtlConfig) -> bool:
    """Print what came of one request; whether it succeeded."""
    if request.answer is None:
        output.error(request.camera, "timeout", "no answer in time"
                     " (is the camera online? `camera-ctl list`)")  # fmt: skip
        return False
    if output.as_json:
        output.line(json.dumps({"camera": request.camera, "answer": request.answer,
                                "end": request.end}))  # fmt: skip
    last = request.end or request.answer
    if not last.get("ok"):
        error = last.get("error") or {}
        output.error(request.camera, str(error.get("code", "failed")),
                     str(error.get("detail") or last.get("message", "")))  # fmt: skip
        return False
    if request.gave_up_offline and request.end is None:
        output.error(request.camera, "offline", f"the camera went offline while job"
                     f" {request.job_id} ran, and did not come back within"
                     f" {OFFLINE_GRACE_S:g} s; when it does it reports the job's end"
                     " (`camera-ctl jobs`)")  # fmt: skip
        return False
    if request.wait_job and request.job_id is not None and request.end is None:
        output.error(request.camera, "timeout", f"job {request.job_id} did not end in time;"
                     " it goes on: `camera-ctl jobs`")  # fmt: skip
        return False
    if not output.as_json:
        print_answer(request, last, output)
    if download is not None and request.end is not None:
        return download_results(request, request.end, output, download, config)
    return True


def print_answer(request: Request, last: dict[str, Any], output: Output) -> None:
    result = ((request.end or {}).get("data") or {}).get("result") or {}
    described = describe_result(result) if result else ""
    text = str(last.get("message", "")) + (f": {described}" if described else "")
    output.line(output.label(request.camera) + text)
    data = (request.answer or {}).get("data") or {}
    for job in data.get("jobs", []) if request.body.get("action") == "jobs" else []:
        output.line(
            f"  {job['id']}  {job['kind']:<9} {job['state']:<9} {_when(job.get('created'))}"
        )
    for f in data.get("files", []) if request.body.get("action") == "files" else []:
        upload = f.get("upload") or {}
        uploaded = f"  upload {upload['state']} {upload['key']}" if upload else ""
        output.line(
            f"  {f['name']}  {f['size']} bytes  {_when(f.get('time'))}  {f['url']}{uploaded}"
        )


def download_results(
    request: Request, end: dict[str, Any], output: Output, directory: Path, config: CtlConfig
) -> bool:
    result = (end.get("data") or {}).get("result") or {}
    for described in result.get("files") or [result]:
        try:
            saved = fetch_file(described, directory, config)
        except CtlError as err:
            output.error(request.camera, "download_failed", str(err))
            return False
        if not output.as_json:
            output.line(f"{output.label(request.camera)}saved {saved}")
    return True


def _when(stamp: object) -> str:
    if not isinstance(stamp, int | float):
        return "-"
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def fetch_file(described: dict[str, Any], directory: Path, config: CtlConfig) -> Path:
    """A capture from nginx over mutual TLS, into ``directory`` under its own name, checked
    against the SHA-256 the agent reported, renamed into place only when whole."""
    url, expected = described.get("url"), described.get("sha256")
    if not isinstance(url, str) or not url:
        raise CtlError("the result has no url (is storage.public_url set?)")
    context = ssl.create_default_context(cafile=str(config.ca))
    context.load_cert_chain(str(config.cert), str(config.key))
    name = Path(str(described.get("path") or url.rsplit("/", 1)[-1])).name
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    partial = directory / f".{name}.partial"
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, context=context, timeout=DOWNLOAD_TIMEOUT_S) as response,  # noqa: S310 - https from the agent's own result
            partial.open("wb") as out,
        ):
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise CtlError(f"cannot download {url}: {err}") from err
    if expected and digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise CtlError(f"{url} arrived with another SHA-256 than the agent reported; not kept")
    partial.replace(final)
    return final


def discover(
    session: Session, config: CtlConfig
) -> list[tuple[str | None, Message | None, dict[str, Any] | None]]:
    """Every camera under the topic root the broker holds retained reports of, with its
    availability message and its state: (camera id or None for the root's own camera, ...)."""
    root = config.base_topic
    messages = session.retained(
        [f"{root}/+/availability", f"{root}/availability", f"{root}/+/state", f"{root}/state"]
    )
    cameras: dict[str | None, tuple[Message | None, dict[str, Any] | None]] = {}
    for m in messages:
        rest = m.topic.removeprefix(f"{root}/")
        camera, _, leaf = rest.rpartition("/")
        key = camera or None
        availability, state = cameras.get(key, (None, None))
        if leaf == "availability":
            availability = m
        elif leaf == "state":
            state = m.json()
        cameras[key] = (availability, state)
    return [(c, a, s) for c, (a, s) in sorted(cameras.items(), key=lambda i: i[0] or "")]


def cmd_list(session: Session, config: CtlConfig, output: Output) -> int:
    rows = [("CAMERA", "AVAILABILITY", "STREAM", "LAST JOB")]
    entries = discover(session, config)
    for camera, availability, state in entries:
        jobs = (state or {}).get("jobs") or []
        last = jobs[-1] if jobs else None
        said = availability.payload.decode(errors="replace") if availability else None
        if output.as_json:
            output.line(json.dumps({
                "camera": camera or (state or {}).get("camera"),
                "base": f"{config.base_topic}/{camera}" if camera else config.base_topic,
                "availability": said,
                "stream": ((state or {}).get("stream") or {}).get("state"),
                "last_job": last,
            }))  # fmt: skip
            continue
        rows.append((
            camera or str((state or {}).get("camera", "(root)")),
            said or "unknown",
            str(((state or {}).get("stream") or {}).get("state", "-")),
            f"{last['kind']} {last['state']} {last['id']}" if last else "-",
        ))  # fmt: skip
    if not output.as_json:
        if not entries:
            output.line(f"no camera has reported under {config.base_topic}/ on this broker")
            return 0
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        for row in rows:
            output.line(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
    return 0


def cmd_retained(
    session: Session, targets: list[tuple[str | None, str]], leaf: str, output: Output
) -> int:
    """`state` and `controls`: the retained report of each camera."""
    failed = 0
    found = {m.topic: m for m in session.retained([f"{base}/{leaf}" for _, base in targets])}
    for camera, base in targets:
        message = found.get(f"{base}/{leaf}")
        body = message.json() if message is not None else None
        if body is None:
            output.error(camera, "not_found", f"no {leaf} retained on {base}/{leaf}")
            failed += 1
        elif output.as_json:
            output.line(json.dumps({"camera": camera, leaf: body}))
        elif leaf == "controls":
            for control in body.get("controls", []):
                bounds = (
                    f" [{control['min']}..{control['max']}]"
                    if control.get("min") is not None
                    else ""
                )
                menu = control.get("menu") or []
                options = " {" + ", ".join(str(o["value"]) for o in menu) + "}" if menu else ""
                flags = " (restarts stream)" if control.get("restarts_stream") else ""
                inactive = f" inactive: {control['inactive']}" if control.get("inactive") else ""
                output.line(f"{output.label(camera)}{control['name']} = {control.get('value')}"
                            f"{bounds}{options}{flags}{inactive}")  # fmt: skip
        else:
            stream = body.get("stream") or {}
            jobs = body.get("jobs") or []
            running = [j for j in jobs if j.get("state") in ("queued", "running")]
            output.line(
                f"{output.label(camera)}camera {body.get('camera')} {body.get('version', '')},"
                f" stream {stream.get('state')}, {len(running)} job(s) running"
                + ("".join(f"; warning: {w}" for w in body.get("warnings") or []))
            )
    return 1 if failed else 0


def cmd_watch(
    session: Session, bases: list[str], output: Output, count: int | None, timeout: float | None
) -> int:
    """Events as they come, until Ctrl-C, ``count`` events or ``timeout`` seconds."""
    session.subscribe([t for base in bases for t in report_topics(base)])
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while count is None or seen < count:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        try:
            message = session.messages.get(timeout=min(left or 1.0, 1.0))
        except queue.Empty:
            continue
        body = message.json()
        if body is None or "event" not in body:
            continue  # the plain-text twin of an event on BASE/events
        seen += 1
        if output.as_json:
            output.line(json.dumps({"topic": message.topic, **body}))
        else:
            camera = body.get("camera", "")
            output.line(
                f"{body.get('ts', '')} {camera} {body.get('event')} {body.get('message', '')}"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camera-ctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="TOML: host, port, ca, cert, key, base_topic")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--camera", help="the camera id (its topics are under BASE_TOPIC/ID)")
    which.add_argument("--all", action="store_true", help="every camera that is online")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.add_argument("--timeout", type=float, default=ANSWER_TIMEOUT_S,
                        help="seconds to wait for each answer (default %(default)g)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("set", help="change controls: set NAME VALUE [NAME VALUE ...]")
    s.add_argument("pairs", nargs="+", metavar="NAME VALUE")
    p = sub.add_parser("picture", help="take a picture (waits for the file)")
    p.add_argument("--download", type=Path, metavar="DIR", help="fetch the file into DIR")
    p.add_argument("--quality", type=int, help="JPEG quality 1-100")
    r = sub.add_parser("record", help="record SECONDS (from the stream, with pre-roll)")
    r.add_argument("seconds", type=float, nargs="?", help="length; none: until `stop`")
    r.add_argument("--preroll", type=float, help="seconds from before the command")
    r.add_argument("--wait", action="store_true", help="wait for the file, with progress")
    r.add_argument("--download", type=Path, metavar="DIR", help="with --wait: fetch the file")
    st = sub.add_parser("stop", help="stop a job (default: the running recording or series)")
    st.add_argument("job", nargs="?")
    t = sub.add_parser("trim", help="cut FILE from START to END seconds into a new file")
    t.add_argument("file")
    t.add_argument("start", type=float)
    t.add_argument("end", type=float)
    t.add_argument("--exact", action="store_true", help="re-encode for frame-exact cuts")
    t.add_argument("--replace", action="store_true", help="replace FILE with the cut")
    t.add_argument("--wait", action="store_true", help="wait for the file")
    t.add_argument("--download", type=Path, metavar="DIR", help="with --wait: fetch the file")
    sm = sub.add_parser("stream", help="start, stop or restart the live stream")
    sm.add_argument("op", choices=["start", "stop", "restart"])
    sub.add_parser("controls", help="the controls with their values and ranges")
    sub.add_parser("state", help="the camera's state: stream, jobs, warnings")
    sub.add_parser("jobs", help="the jobs of the last hour")
    f = sub.add_parser("files", help="the captures (newest first), with their uploads")
    f.add_argument("prefix", nargs="?", default="")
    u = sub.add_parser("upload", help="queue a capture for the S3 store (upload.enabled)")
    u.add_argument("file")
    w = sub.add_parser("watch", help="events as they come (Ctrl-C ends)")
    w.add_argument("--count", type=int, help="end after this many events")
    w.add_argument("--for", dest="seconds", type=float, help="end after this many seconds")
    sub.add_parser("list", help="every camera the broker knows: availability, stream, last job")
    return parser


Built = tuple[str, dict[str, Any], bool, float | None]


def _set(args: argparse.Namespace) -> Built:
    return "settings", settings_body(args.pairs), False, None


def _picture(args: argparse.Namespace) -> Built:
    quality = {} if args.quality is None else {"quality": args.quality}
    return "action", {"action": "picture", **quality}, True, PICTURE_TIMEOUT_S


def _record(args: argparse.Namespace) -> Built:
    body: dict[str, Any] = {"action": "record"}
    if args.seconds is not None:
        body["duration"] = args.seconds
    if args.preroll is not None:
        body["preroll"] = args.preroll
    limit = None if args.seconds is None else args.seconds + (args.preroll or 0) + RECORD_MARGIN_S
    return "action", body, args.wait, limit


def _trim(args: argparse.Namespace) -> Built:
    body = {"action": "trim", "file": args.file, "start": args.start, "end": args.end,
            "mode": "exact" if args.exact else "fast", "replace": args.replace}  # fmt: skip
    return "action", body, args.wait, TRIM_TIMEOUT_S


REQUESTS: dict[str, Callable[[argparse.Namespace], Built]] = {
    "set": _set,
    "picture": _picture,
    "record": _record,
    "trim": _trim,
    "stop": lambda a: (
        "action",
        {"action": "stop", **({"job": a.job} if a.job else {})},
        False,
        None,
    ),
    "stream": lambda a: ("action", {"action": "stream", "op": a.op}, False, None),
    "jobs": lambda a: ("action", {"action": "jobs", "limit": 50}, False, None),
    "files": lambda a: ("action", {"action": "files", "prefix": a.prefix}, False, None),
    "upload": lambda a: ("action", {"action": "upload", "file": a.file}, False, None),
}


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = load_ctl_config(args.config)
    if getattr(args, "download", None) is not None and args.command != "picture" and not args.wait:
        raise CtlConfigError("--download needs --wait: the file exists when the job has ended")
    session = Session(config)
    try:
        output = Output(args.json, args.all, out, err)
        if args.command == "list":
            return cmd_list(session, config, output)
        targets: list[tuple[str | None, str]]
        if args.all:
            targets = [
                (camera or str((state or {}).get("camera") or config.base_topic),
                 f"{config.base_topic}/{camera}" if camera else config.base_topic)
                for camera, availability, state in discover(session, config)
                if availability is not None and availability.payload == b"online"
            ]  # fmt: skip
            if not targets:
                output.error(None, "no_cameras", f"no camera under {config.base_topic}/ is online")
                return 1
        else:
            targets = [(args.camera, config.camera_base(args.camera))]
        if args.command in ("state", "controls"):
            return cmd_retained(session, targets, args.command, output)
        if args.command == "watch":
            bases = [f"{config.base_topic}/+", config.base_topic] if args.all else [targets[0][1]]
            return cmd_watch(session, bases, output, args.count, args.seconds)
        channel, body, wait_job, job_timeout = REQUESTS[args.command](args)
        requests = [
            Request(camera, base, channel, dict(body), wait_job) for camera, base in targets
        ]
        Exchange(session, requests).run(args.timeout, job_timeout, output.progress)
        download = getattr(args, "download", None)
        results = [report(r, output, download, config) for r in requests]
        return 0 if all(results) else 1
    finally:
        session.close()


def main(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, out, err)
    except CtlConfigError as error:
        print(f"camera-ctl: {error}", file=err)
        return 2
    except CtlError as error:
        print(f"camera-ctl: {error}", file=err)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
