"""camera-ctl against the tools beside it: a `set` round trip, wall-clock from the command line.

Against a real Mosquitto and the real agent on loopback (test pattern, streaming off), each run
starts a fresh process and ends when it has exited:

- `camera-ctl set brightness X` (connect with mutual TLS, subscribe, send, the answer, exit);
- `mosquitto_rr` with the same certificate sending the same command with a response topic and
  exiting at the answer (Mosquitto's own C client: the floor for a new connection each time);
- for the breakdown: the Python interpreter alone (`python -c pass`) and the import of
  camera-ctl (`python -c "import agent.ctl.main"`).

Usage: `scripts/bench ctl [--runs 50]`. Runs alternate between the tools, so load on the
machine touches both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack import Broker

from bench.control_plane import quantile, running_agent
from pki.authority import CertificateAuthority, Role

CAMERA_CTL = Path(sys.executable).with_name("camera-ctl")


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Milliseconds from start to exit; the command must succeed."""
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {result.stdout}{result.stderr}")
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="camera-bench-") as tmp:
        root = Path(tmp)
        pki = root / "pki"
        ca = CertificateAuthority(pki)
        ca.init()
        ca.issue("cli", Role.OPERATOR)
        client = pki / "clients" / "cli"
        broker = Broker(pki, root / "broker")
        broker.start()
        try:
            with running_agent(broker, root / "agent", nodelay=True):
                ctl_env = {
                    "CAMERA_CTL_HOST": "127.0.0.1",
                    "CAMERA_CTL_PORT": str(broker.port),
                    "CAMERA_CTL_CA": str(pki / "ca_chain.pem"),
                    "CAMERA_CTL_CERT": str(client / "cert.pem"),
                    "CAMERA_CTL_KEY": str(client / "key.pem"),
                }
                samples: dict[str, list[float]] = {}
                for run in range(args.runs + 3):  # three to warm the page cache
                    value = f"{(run % 90 + 10) / 100:.2f}"
                    rr_command = json.dumps({"id": f"rr{run}", "set": {"brightness": value}})
                    commands = {
                        "camera-ctl set brightness X": (
                            [str(CAMERA_CTL), "set", "brightness", value], ctl_env
                        ),
                        "mosquitto_rr (same command)": (
                            ["mosquitto_rr", "-h", "127.0.0.1", "-p", str(broker.port),
                             "--cafile", str(pki / "ca_chain.pem"),
                             "--cert", str(client / "cert.pem"), "--key", str(client / "key.pem"),
                             "-t", "camera/control/settings", "-e", f"camera/response/rr{run}",
                             "-m", rr_command, "-W", "10"],
                            None,
                        ),
                        "python -c pass": ([sys.executable, "-c", "pass"], None),
                        "python -c 'import agent.ctl.main'": (
                            [sys.executable, "-c", "import agent.ctl.main"], None
                        ),
                    }  # fmt: skip
                    for name, (command, env) in commands.items():
                        elapsed = timed(command, env)
                        if run >= 3:
                            samples.setdefault(name, []).append(elapsed)
        finally:
            broker.stop()
    rr = statistics.median(samples["mosquitto_rr (same command)"])
    print(f"\n`set` round trip from the command line, {args.runs} runs each, loopback, ms")
    print(f"{'':36} {'median':>7} {'p95':>7} {'max':>7} {'vs rr':>7}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:36} {median:7.1f} {quantile(values, 0.95):7.1f} {max(values):7.1f}"
            f" {median / rr:7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
