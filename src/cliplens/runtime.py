"""Plumbing for the scripts Snakemake runs: logging into the rule's log file, the device a job runs on."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Terminated(SystemExit):
    """SIGTERM (Snakemake stopping a job, a cluster's time limit) turned into an exception, so that
    the writers' cleanup runs and no temporary file stays behind."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(128 + signum)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` instead of killing the process outright."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def job_logging(log_path: str | os.PathLike | None, threads: int | None = None) -> Iterator[logging.Logger]:
    """Route logging, warnings and stderr (progress bars) of a job to its log file; on SIGTERM
    the job stops through an exception, so that its partial outputs are removed. A job that
    finishes logs what it used (:func:`resources_used`).

    ``threads`` (the rule's) caps torch's intra-op threads, so parallel jobs do not oversubscribe cores.
    """
    if threads:
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        else:  # a job that imports torch later (if at all) gets the cap from the environment
            os.environ["OMP_NUM_THREADS"] = str(threads)
    # what the imports built lives as long as the job: out of the collector's full passes, which
    # would otherwise walk torch's and matplotlib's objects again and again
    gc.freeze()
    with terminate_cleanly(), _log_to(log_path) as log:
        yield log
        log.info(resources_used())


RESOURCES_LINE = "resources used: cpu {cpu:.2f} s, peak rss {rss:.0f} MB, {figures} figures saved in {figure_cpu:.2f} cpu s"
"""The last line of a finished job's log (its CPU time counts its start-up: imports included; the
figures' time is the CPU spent saving them: layout, drawing and encoding every format)."""


@dataclass
class FigureCost:
    """Figures this process saved and the CPU seconds their saving took."""

    count: int = 0
    cpu: float = 0.0


FIGURES_SAVED = FigureCost()
"""What :func:`saving_figure` measured in this process (reported by :func:`resources_used`)."""


@contextlib.contextmanager
def saving_figure() -> Iterator[None]:
    """Count the block as the saving of one figure and add its CPU time to :data:`FIGURES_SAVED`."""
    start = time.process_time()
    try:
        yield
    finally:
        FIGURES_SAVED.count += 1
        FIGURES_SAVED.cpu += time.process_time() - start


def resources_used() -> str:
    """CPU seconds (user + system) of this process and its waited-for children since they started,
    the peak resident memory of this process and the figures it saved, as :data:`RESOURCES_LINE`."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return RESOURCES_LINE.format(
        cpu=cpu, rss=_peak_rss_bytes(own) / 2**20, figures=FIGURES_SAVED.count, figure_cpu=FIGURES_SAVED.cpu
    )


def _peak_rss_bytes(own: resource.struct_rusage) -> float:
    """Peak resident memory of this program. Linux's ``ru_maxrss`` keeps the peak of the process that
    forked this one from before its ``exec`` (Snakemake's, pytest's), so /proc's VmHWM comes first."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return own.ru_maxrss if sys.platform == "darwin" else own.ru_maxrss * 1024  # bytes on macOS, KiB elsewhere


@contextlib.contextmanager
def _log_to(log_path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    if not log_path:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        yield logging.getLogger("cliplens")
        return
    with open(log_path, "a", buffering=1) as handle, contextlib.redirect_stderr(handle):
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield logging.getLogger("cliplens")
        except BaseException:
            logging.getLogger("cliplens").exception("job failed")
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr.flush()


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device a model config's ``device`` names: 'auto' picks CUDA when present, else CPU.
    Imports torch only here, so that planning a run (which asks whether a model job needs the GPU
    slot) imports neither open_clip nor torchvision."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
