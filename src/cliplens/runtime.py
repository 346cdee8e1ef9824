"""Plumbing for the scripts Snakemake runs: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def job_logging(log_path: str | os.PathLike | None, threads: int | None = None) -> Iterator[logging.Logger]:
    """Route logging, warnings and stderr (progress bars) of a job to its log file.

    ``threads`` (the rule's) caps torch's intra-op threads, so parallel jobs do not oversubscribe cores.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
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
