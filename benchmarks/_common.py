"""Shared benchmark plumbing: hardware description, timing, and Markdown/CSV tables."""

from __future__ import annotations

import csv
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def hardware() -> str:
    """One line naming the device this ran on."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} threads={torch.get_num_threads()} (torch {torch.__version__})"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""wall: elapsed seconds; cpu: this process's CPU seconds (steadier when other processes share the cores)."""


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_of(repeats: int, run: Callable[[], object], clock: str = "wall") -> float:
    """Least time in seconds on ``clock`` over ``repeats`` runs (after one warm-up), synchronising CUDA."""
    now = CLOCKS[clock]
    run()
    _synchronize()
    times = []
    for _ in range(repeats):
        start = now()
        run()
        _synchronize()
        times.append(now() - start)
    return min(times)


def write_table(rows: Sequence[dict], out: str | os.PathLike) -> str:
    """Write rows to CSV at ``out`` and return them as a Markdown table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)
