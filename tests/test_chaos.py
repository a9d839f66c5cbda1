"""The short form of `scripts/chaos`: a minute of load and faults against the real stack, then
the invariants. Slow (about two and a half minutes), so it runs with the pod tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos import run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_under_load_and_faults_nothing_is_lost_and_nothing_leaks(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, minutes=1.2, seed=12)
    table = "\n".join(f"{name}: {value}" for name, value in report.rows)
    print(table)
    assert not report.failures, f"{report.failures}\n{table}"
    # Every kind of fault struck (each comes once before any comes twice).
    faults = dict(report.rows)["faults"]
    for kind in ("broker restart", "MediaMTX restart", "pusher SIGKILL", "agent SIGKILL"):
        assert kind in faults, faults
    # The seed is one whose schedule fills the disk while the series is being taken.
    assert dict(report.rows)["disk full while the timelapse ran"] == "yes", table


def test_uploads_under_load_and_faults_reach_the_store_once_each(tmp_path: Path) -> None:
    """The same, with every capture uploaded to a real SeaweedFS that a fault SIGKILLs and
    starts again: the queue empties, every capture left on disk is in the bucket, and the
    bucket holds nothing the agent did not report uploaded, each with its reported SHA-256."""
    report = run_chaos(tmp_path, minutes=1.2, seed=26, with_s3=True)
    table = "\n".join(f"{name}: {value}" for name, value in report.rows)
    print(table)
    assert not report.failures, f"{report.failures}\n{table}"
    faults = dict(report.rows)["faults"]
    for kind in ("S3 store SIGKILL", "agent SIGKILL", "broker restart"):
        assert kind in faults, faults
    uploaded = dict(report.rows)["objects in the bucket / reported / stray"].split(" / ")
    assert int(uploaded[0]) > 20, table  # a minute of pictures and recordings went up
