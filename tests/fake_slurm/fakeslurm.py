"""State shared by the fake SLURM commands of this folder (sbatch, srun, sacct, squeue, ...).

Put this folder first on PATH and set FAKE_SLURM_DIR to an empty folder. Then:
- every call of a fake command is appended to $FAKE_SLURM_DIR/calls.jsonl as one JSON object
  {"tool", "args", "job", "time"} (job: the SLURM job id the call made or ran inside);
- sbatch runs its --wrap command on this machine, in the -D folder, with SLURM_JOB_ID (and
  SLURM_GPUS for --gpus) set, then prints the job id (what `sbatch --parsable` prints);
- sacct and squeue report RUNNING, COMPLETED, FAILED or CANCELLED for the jobs of a --name;
- sacctmgr lists the accounts in $FAKE_SLURM_ACCOUNTS (comma-separated).
Job files in $FAKE_SLURM_DIR/jobs: <id>.name (the job name), <id>.rc (its exit status, once done).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_DIR"])
JOBS = STATE / "jobs"


def record(tool: str, args: list[str], job: str | None = None) -> None:
    """Append one call to calls.jsonl (locked: sbatch is called from several threads)."""
    line = json.dumps({"tool": tool, "args": args, "job": job, "time": time.time()})
    with open(STATE / "calls.jsonl", "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(line + "\n")


def new_job_id() -> str:
    """The next free job id: the first one whose name file can be created exclusively."""
    JOBS.mkdir(parents=True, exist_ok=True)
    number = len(list(JOBS.glob("*.name"))) + 1
    while True:
        try:
            (JOBS / f"{number}.name").open("x").close()
            return str(number)
        except FileExistsError:
            number += 1


def option(args: list[str], *names: str) -> str | None:
    """The value of the first of ``names`` in ``args`` (as `--name value` or `--name=value`)."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def state(job: str) -> str:
    rc = JOBS / f"{job}.rc"
    if not rc.exists():
        return "RUNNING"
    code = rc.read_text().strip()
    return {"0": "COMPLETED", "cancelled": "CANCELLED"}.get(code, "FAILED")


def jobs_named(name: str | None) -> list[str]:
    if name is None or not JOBS.is_dir():
        return []
    return sorted((p.stem for p in JOBS.glob("*.name") if p.read_text() == name), key=int)


def print_states(name: str | None) -> None:
    """One `<job id>|<state>` line per job of that name: the plugin's sacct/squeue format."""
    for job in jobs_named(name):
        print(f"{job}|{state(job)}")
