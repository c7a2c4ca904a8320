"""Worker processes die with the server process that started them.

``cto serve`` runs one supervisor process (BentoML's process manager) that forks the workers and
hands them the listening socket. If the supervisor is killed with SIGKILL it cannot stop them,
and orphaned workers would go on answering on the port, so a restart fails with "Address
already in use". Each worker therefore asks the kernel to kill it when its parent dies (Linux
``prctl(PR_SET_PDEATHSIG)``), and falls back to watching its parent id where that call does not
exist. A worker killed this way loses nothing acknowledged: /events answers only after its commit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("cto.serving")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 1.0


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    stop = threading.Event()
    while not stop.wait(WATCH_SECONDS):
        if os.getppid() != parent:
            log.error("the server process %d is gone: this worker exits", parent)
            os._exit(1)


SUPERVISOR_ENV = "CTO_SUPERVISOR_PID"


def is_worker_process() -> bool:
    """True in a BentoML worker (``python -m _bentoml_impl.worker.service ...``)."""
    return "_bentoml_impl" in sys.argv[0] and "worker" in sys.argv[0]


def supervisor_pid() -> int:
    """The server process: named by ``cto serve`` (it keeps its pid across ``exec``), else the
    parent this worker has now."""
    named = os.environ.get(SUPERVISOR_ENV, "")
    return int(named) if named.isdigit() else os.getppid()


def exit_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` (the pid it was started by) ends.

    Called when the service module is imported in a worker, before the heavy imports; if the
    parent died before the kernel was asked (a worker being restarted when the server was
    killed), the worker has been re-parented and exits at once.
    """
    if _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent:
            os._exit(1)
        return
    # Elsewhere: a daemon thread checks once a second whether the worker was re-parented.
    threading.Thread(
        target=_watch_parent, args=(parent,), name="cto-parent-watch", daemon=True
    ).start()
