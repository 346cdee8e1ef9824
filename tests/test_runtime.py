"""cliplens.runtime: what a finished job reports in its log (in a fresh interpreter without torch, so
that the numbers are the job's own)."""

from __future__ import annotations

import re
import subprocess
import sys

RESOURCES = re.compile(r"resources used: cpu ([\d.]+) s, peak rss (\d+) MB, (\d+) figures saved in ([\d.]+) cpu s$")


def run_job(log, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` inside ``job_logging`` in a new Python process."""
    code = f"from cliplens.runtime import job_logging\nwith job_logging({str(log)!r}):\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_finished_job_logs_its_cpu_time_and_peak_memory(tmp_path):
    quiet = run_job(tmp_path / "quiet.log", "pass")
    busy = run_job(
        tmp_path / "busy.log",
        "import time\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.5: pass\n"
        "ballast = bytearray(300 * 2**20)\n"
        "ballast[::4096] = b'x' * len(ballast[::4096])",
    )
    assert quiet.returncode == busy.returncode == 0, quiet.stderr + busy.stderr
    quiet_cpu, quiet_rss, quiet_figures, _ = map(float, RESOURCES.search((tmp_path / "quiet.log").read_text()).groups())
    busy_cpu, busy_rss, _, _ = map(float, RESOURCES.search((tmp_path / "busy.log").read_text()).groups())
    assert quiet_figures == 0
    assert quiet_rss < 200 and quiet_cpu < 0.5  # an interpreter that imported the runtime module only
    assert busy_cpu >= quiet_cpu + 0.45 and busy_rss >= quiet_rss + 280


def test_a_finished_job_logs_the_figures_it_saved_and_their_cpu_time(tmp_path):
    job = run_job(
        tmp_path / "job.log",
        "import time\n"
        "import matplotlib.pyplot as plt\n"
        "from cliplens.plotting import save_figure\n"
        f"for name in ('a', 'b'): save_figure(plt.figure(), {str(tmp_path)!r} + f'/{{name}}.png')\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.5: pass  # work that is not a figure",
    )
    assert job.returncode == 0, job.stderr
    cpu, _, figures, figure_cpu = map(float, RESOURCES.search((tmp_path / "job.log").read_text()).groups())
    assert figures == 2 and (tmp_path / "a.png").is_file() and (tmp_path / "b.pdf").is_file()
    assert 0 < figure_cpu <= cpu - 0.45


def test_a_failed_job_does_not_claim_to_have_finished(tmp_path):
    failed = run_job(tmp_path / "job.log", "raise ValueError('bad input')")
    text = (tmp_path / "job.log").read_text()
    assert failed.returncode != 0 and "job failed" in text and "resources used" not in text


def test_what_a_job_imported_is_out_of_the_collectors_full_passes(tmp_path):
    job = run_job(tmp_path / "job.log", "import gc, json\nprint(json.dumps(gc.get_freeze_count()))")
    assert job.returncode == 0, job.stderr
    assert int(job.stdout) > 1000  # the interpreter's and the imports' objects are frozen
