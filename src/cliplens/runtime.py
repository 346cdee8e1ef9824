"""Plumbing for the scripts Snakemake runs: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType


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
    the job stops through an exception, so that its partial outputs are removed.

    ``threads`` (the rule's) caps torch's intra-op threads, so parallel jobs do not oversubscribe cores.
    """
    if threads:
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        else:  # a job that imports torch later (if at all) gets the cap from the environment
            os.environ["OMP_NUM_THREADS"] = str(threads)
    with terminate_cleanly(), _log_to(log_path) as log:
        yield log


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
