"""The directory where ``serve --processes N`` workers keep their metrics, owned by the supervisor.

prometheus_client chooses its multiprocess mode when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``,
so the supervisor sets it before anything imports the library (this module does not import it at import
time) and before any worker is forked; every worker then writes its own files there. The directory is
private to one supervisor run (a fresh temporary one), so no file of an earlier run is ever summed, and it
is removed when the supervisor exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

log = logging.getLogger("gateway.metrics")

#: The environment variable that switches prometheus_client to its multiprocess mode (the library's name).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory of the multiprocess mode, or None in a single process."""
    return os.environ.get(MULTIPROC_ENV) or None


class WorkerMetricsDir:
    """Creates the directory and points the environment at it; :meth:`worker_exited` and :meth:`close` tidy up."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="iqra-gateway-metrics-")
        self._previous = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.path

    def worker_exited(self, pid: int) -> None:
        """A worker is gone: its live gauges (hub connections) leave the sum. Its counters stay, as they must."""
        from prometheus_client.multiprocess import mark_process_dead

        try:
            mark_process_dead(pid, self.path)
        except OSError as exc:  # never let tidying up stop the supervisor
            log.warning("could not remove the metrics of worker pid %d: %s", pid, exc)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = self._previous

    def __enter__(self) -> WorkerMetricsDir:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
