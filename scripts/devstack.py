"""Run the shipped broker config natively: used by `scripts/run` and by the tests.

The config under broker/ is read as shipped; only the listener port/address and file paths are
rewritten (plus `user root`, because Mosquitto started as root would otherwise drop to the
`mosquitto` user, which cannot read the 0600 keys that camera-pki writes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
BROKER_CONF = REPO / "broker" / "mosquitto.conf"
CONTAINER_PKI = "/mosquitto/certs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_broker_config(pki_dir: Path, data_dir: Path, port: int, host: str = "127.0.0.1") -> str:
    """The shipped config with its listener moved to host:port and its paths made local."""
    out: list[str] = []
    for line in BROKER_CONF.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "listener":
            out.append(f"listener {port} {host}")
        elif key == "persistence_location":
            out.append(f"persistence_location {data_dir}/")
        elif value.startswith(CONTAINER_PKI):
            out.append(f"{key} {pki_dir}{value.removeprefix(CONTAINER_PKI)}")
        else:
            out.append(line)
    out.append("user root")
    return "\n".join(out) + "\n"


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass
class Broker:
    """A real Mosquitto running the shipped config; its output goes to ``log_path``."""

    pki_dir: Path
    work_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.work_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "mosquitto.log"

    def config_text(self) -> str:
        return render_broker_config(self.pki_dir, self.work_dir / "data", self.port)

    def start(self) -> None:
        (self.work_dir / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        log: IO[bytes] = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a test's Ctrl-C does not hit it
        )
        log.close()
        try:
            wait_for_port("127.0.0.1", self.port)
        except OSError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log_text()}") from None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its config and the ACL file."""
        if self.process is None:
            raise RuntimeError("the broker is not running")
        self.process.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""


def agent_config_toml(
    pki_dir: Path,
    broker_port: int,
    state_root: Path,
    client: str = "agent",
    base_topic: str = "camera",
    camera_id: str = "cam",
) -> str:
    """A camera-agent config for a local broker (native run and tests)."""
    client_dir = pki_dir / "clients" / client
    return f"""\
[mqtt]
host = "127.0.0.1"
port = {broker_port}
ca = "{pki_dir / "ca_chain.pem"}"
cert = "{client_dir / "cert.pem"}"
key = "{client_dir / "key.pem"}"
base_topic = "{base_topic}"

[camera]
id = "{camera_id}"
backend = "testsrc"

[storage]
captures_dir = "{state_root / "captures"}"
state_dir = "{state_root / "state"}"
"""


def terminate_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the process group, wait, SIGKILL what is left; returns the exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def main(argv: list[str]) -> int:
    """`scripts/run`: PKI on first run, broker, then the agent in the foreground."""
    import argparse  # noqa: PLC0415 - only the command line needs it

    from pki.authority import CertificateAuthority  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="scripts/run")
    parser.add_argument("home", type=Path, help="work directory (PKI, broker data, captures)")
    parser.add_argument("--port", type=int, default=8883, help="broker port on 127.0.0.1")
    args = parser.parse_args(argv)
    home: Path = args.home.resolve()
    pki_dir = home / "pki"
    if CertificateAuthority(pki_dir).init():
        print(f"generated a PKI in {pki_dir}")
    broker = Broker(pki_dir, home / "broker", port=args.port)
    broker.start()
    config = home / "agent.toml"
    config.write_text(agent_config_toml(pki_dir, broker.port, home))
    op = pki_dir / "clients" / "operator"
    tls = (
        f"-h 127.0.0.1 -p {broker.port} --cafile {pki_dir}/ca_chain.pem"
        f" --cert {op}/cert.pem --key {op}/key.pem"
    )
    print(
        f"broker on 127.0.0.1:{broker.port} (log: {broker.log_path})\n"
        f"watch:   mosquitto_sub {tls} -t 'camera/#' -v\n"
        f"command: mosquitto_pub {tls} -t camera/control/settings -m 'brightness 0.3'\n",
        flush=True,
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)], start_new_session=True
    )

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return agent.wait()
    except KeyboardInterrupt:
        return terminate_group(agent)
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
