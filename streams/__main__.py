"""``python -m streams`` and the ``streams`` console script.

A pipeline process (worker, sinks, monitor) that gets SIGTERM before its own handling is in
place exits at once with status 0: nothing has been read, so there is nothing to finish. The
handler goes in before anything is imported, so a supervisor stopping a process that is still
starting never sees it killed by the signal (status -15). Each process replaces it with its
own graceful stop once started.
"""

import logging
import os
import signal
import sys

PIPELINE_COMMANDS = frozenset({"worker", "sink", "totals-writer", "action-sink",
                               "progress-writer", "award-sink", "grant-writer", "rules-sink",
                               "monitor"})
"""Commands that run until stopped (the worker, every sink stage of :mod:`streams.topology`,
the monitor); every other command keeps the default SIGTERM action."""


def exit_0_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler of a process still starting: flush the logs and exit with status 0.

    The exit is ``os._exit``, not ``SystemExit``: Python runs a handler wherever the main
    thread is, and an exception raised inside a finalizer (``__del__``, e.g. an asyncio
    transport's, or a weakref callback) is printed and dropped, so the process went on
    starting with SIGTERM ignored. Nothing has been read yet, so nothing is lost. Further
    SIGTERMs are ignored from here on: a supervisor often repeats the signal (docs/design.md,
    "Operations").
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing more to say
            pass
    os._exit(0)


def run() -> None:
    """Run the ``streams`` command line."""
    if len(sys.argv) > 1 and sys.argv[1] in PIPELINE_COMMANDS:
        signal.signal(signal.SIGTERM, exit_0_on_sigterm)
    from streams.cli import main

    main()


if __name__ == "__main__":
    run()
