"""cliplens.runtime: what a finished job reports in its log."""

from __future__ import annotations

import re
import time

from cliplens.runtime import job_logging


def test_a_finished_job_logs_its_cpu_time_and_peak_memory(tmp_path):
    log = tmp_path / "job.log"
    with job_logging(log):
        start = time.process_time()
        while time.process_time() - start < 0.3:  # burn CPU
            pass
        ballast = bytearray(200 * 2**20)  # 200 MB resident
        ballast[::4096] = b"x" * len(ballast[::4096])
    last = log.read_text().splitlines()[-1]
    match = re.search(r"resources used: cpu ([\d.]+) s, peak rss (\d+) MB$", last)
    assert match, last
    assert float(match[1]) >= 0.3 and int(match[2]) >= 200


def test_a_failed_job_does_not_claim_to_have_finished(tmp_path):
    log = tmp_path / "job.log"
    try:
        with job_logging(log):
            raise ValueError("bad input")
    except ValueError:
        pass
    text = log.read_text()
    assert "job failed" in text and "resources used" not in text
