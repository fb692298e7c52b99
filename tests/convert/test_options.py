"""convert.options: the default number of jobs follows the CPUs the process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convert.options import MAX_DEFAULT_JOBS, usable_cpus


@pytest.fixture
def four_cpus(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        (None, 4),  # no cgroup v2 limit to read
        ("max 100000\n", 4),  # a cgroup without a quota
        ("150000 100000\n", 2),  # docker run --cpus 1.5: rounded up
        ("50000 100000\n", 1),
        ("800000 100000\n", 4),  # a quota above the affinity: the affinity
        ("garbage\n", 4),
    ],
)
def test_usable_cpus_follow_affinity_and_cgroup_quota(
    four_cpus, tmp_path: Path, cpu_max: str | None, expected: int
) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert usable_cpus(path) == expected


def test_default_jobs_stay_bounded() -> None:
    from convert.options import DEFAULT_JOBS

    assert 2 <= DEFAULT_JOBS == min(usable_cpus() + 1, MAX_DEFAULT_JOBS)
