"""Upload benchmark: the agent's uploads to a real SeaweedFS on loopback.

- throughput: a 64 MiB capture uploaded by the agent (`upload <file>`, the worker's multipart
  upload with a SHA-256 on every part), against the same file put by `curl --aws-sigv4` in one
  unchecked PUT (the store's own fastest path), in the same run; the ratio is curl's time over
  the agent's;
- the agent's CPU per uploaded MiB (the agent and its upload process, from /proc);
- the agent's resident memory with uploads on and nothing queued, against uploads off, and with
  1,000 captures queued (the store down, so they stay queued).

Usage: `scripts/bench upload [--mib N] [--queue N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from devstack import Broker, ObjectStore, StoreIdentity

from bench.control_plane import CLOCK_TICKS, process_usage
from pki.authority import CertificateAuthority
from tests.support import AgentProcess, Probe

MIB = 1 << 20


def cpu_with_children(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children it has reaped (the upload process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def rss_mib(agent: AgentProcess) -> float:
    assert agent.process is not None
    return process_usage(agent.process.pid)[1] / MIB


def start(broker: Broker, operator: Probe, work: Path, env: dict[str, str]) -> AgentProcess:
    agent = AgentProcess(broker, work, env=env)
    agent.start()
    operator.wait_for(
        lambda m: m.topic == "camera/availability" and m.payload == b"online", timeout=30
    )
    time.sleep(3)  # the start-up heap is released once connected (agent/memory.py)
    return agent


def curl_put(store: ObjectStore, path: Path, key: str) -> float:
    admin = store.admin
    began = time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(path), "--aws-sigv4",
         "aws:amz:us-east-1:s3", "--user", f"{admin.access_key}:{admin.secret_key}",
         f"{store.endpoint}/{store.bucket}/{key}"],
        check=True, timeout=120,
    )  # fmt: skip
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench upload")
    parser.add_argument("--mib", type=int, default=64, help="size of the uploaded capture")
    parser.add_argument("--queue", type=int, default=1000, help="captures queued for the RSS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="camera-bench-") as tmp:
        root = Path(tmp)
        CertificateAuthority(root / "pki").init()
        broker = Broker(root / "pki", root / "broker")
        store = ObjectStore(root / "s3")
        camera = store.add_identity(StoreIdentity.for_camera("cam"))
        broker.start()
        store.start()
        store.create_bucket()
        operator = Probe(broker, "operator")
        operator.subscribe("camera/#")
        try:
            run(args, root, broker, store, camera, operator)
        finally:
            operator.close()
            store.stop()
            broker.stop()


def run(
    args: argparse.Namespace,
    root: Path,
    broker: Broker,
    store: ObjectStore,
    camera: StoreIdentity,
    operator: Probe,
) -> None:
    on = store.agent_settings(camera, root / "s3-credentials") | {
        "CAMERA_AGENT_UPLOAD__RETRY_MIN_S": "30",
        "CAMERA_AGENT_UPLOAD__RETRY_MAX_S": "60",
    }
    off = start(broker, operator, root / "off", {})
    rss_off = rss_mib(off)
    off.stop()
    operator.history.clear()

    agent = start(broker, operator, root / "on", on)
    rss_on = rss_mib(agent)
    big = root / "on" / "captures" / "record-20261204T100000.000Z.mp4"
    big.write_bytes(os.urandom(args.mib * MIB))
    curl_put(store, big, "warm-up")  # the store's first write allocates its volumes
    assert agent.process is not None
    cpu0 = cpu_with_children(agent.process.pid)
    began = time.perf_counter()
    operator.publish("camera/control/action", json.dumps({"action": "upload", "file": big.name}))
    done = operator.wait_event(event="upload.done", timeout=300)
    agent_s = time.perf_counter() - began
    time.sleep(6)  # the upload process ends (queue empty) and is reaped: its CPU counts
    cpu_s = cpu_with_children(agent.process.pid) - cpu0
    curl_s = curl_put(store, big, "cam/curl-copy.bin")
    big.unlink()

    # 1,000 queued: the store down, so they stay.
    store.stop()
    captures = root / "on" / "captures"
    for n in range(args.queue):
        (captures / f"picture-20261204T1000{n // 60 % 60:02d}.{n:03d}Z-{n}.jpg").write_bytes(
            b"\xff\xd8" + os.urandom(2000) + b"\xff\xd9"
        )
    for n, name in enumerate(sorted(p.name for p in captures.iterdir())):
        operator.publish(
            "camera/control/action",
            json.dumps({"id": f"q{n}", "action": "upload", "file": name}),
            wait=False,
        )
    operator.wait_event(id=f"q{args.queue - 1}", timeout=120)
    time.sleep(5)
    rss_queued = rss_mib(agent)
    agent.stop()
    # The same queue read back from the journal at a start: the queue's own cost, without
    # what answering 1,000 commands left in the heap.
    operator.history.clear()
    agent = start(broker, operator, root / "on", on)
    rss_restarted = rss_mib(agent)
    agent.stop()

    mib = done["data"]["bytes"] / MIB
    print(f"upload of {mib:.0f} MiB to SeaweedFS on loopback (this machine, one run)")
    print(f"{'':<44}{'agent':>10}{'curl':>10}{'ratio':>8}")
    print(
        f"{'seconds, command to upload.done / curl':<44}{agent_s:>10.2f}{curl_s:>10.2f}"
        f"{curl_s / agent_s:>8.2f}"
    )
    print(
        f"{'MiB/s':<44}{mib / agent_s:>10.1f}{mib / curl_s:>10.1f}"
        f"{(mib / agent_s) / (mib / curl_s):>8.2f}"
    )
    print(f"{'  of which in the worker (upload.done seconds)':<44}{done['data']['seconds']:>10.2f}")
    print(f"{'agent CPU ms per MiB (agent + upload process)':<44}{cpu_s * 1000 / mib:>10.1f}")
    print(f"\n{'agent RSS MiB':<44}{'MiB':>10}{'ratio':>8}")
    print(f"{'uploads off':<44}{rss_off:>10.1f}{1.0:>8.2f}")
    print(f"{'uploads on, nothing queued':<44}{rss_on:>10.1f}{rss_on / rss_off:>8.2f}")
    print(
        f"{f'uploads on, {args.queue:,} queued by command':<44}{rss_queued:>10.1f}"
        f"{rss_queued / rss_off:>8.2f}"
    )
    print(
        f"{f'  the same {args.queue:,}, read back at a start':<44}{rss_restarted:>10.1f}"
        f"{rss_restarted / rss_off:>8.2f}"
    )


if __name__ == "__main__":
    main()
