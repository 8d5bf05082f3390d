"""``python -m streams`` and the ``streams`` console script.

A pipeline process (worker, sinks, monitor) that gets SIGTERM before its own handling is in
place exits at once with status 0: nothing has been read, so there is nothing to finish. The
handler goes in before anything is imported, so a supervisor stopping a process that is still
starting never sees it killed by the signal (status -15). Each process replaces it with its
own graceful stop once started.
"""

import signal
import sys

PIPELINE_COMMANDS = frozenset({"worker", "sink", "totals-writer", "action-sink",
                               "progress-writer", "award-sink", "grant-writer", "rules-sink",
                               "monitor"})
"""Commands that run until stopped (the worker, every sink stage of :mod:`streams.topology`,
the monitor); every other command keeps the default SIGTERM action."""


def exit_0_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler of a process still starting: exit with status 0.

    Further SIGTERMs are ignored from here on: a supervisor often repeats the signal, and
    Python puts SIGTERM back to its default action while it finalizes, so a repeat landing
    in that moment ended the exit with status -15 (20 runs in 20 with a repeat every 0.5 ms).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def run() -> None:
    """Run the ``streams`` command line."""
    if len(sys.argv) > 1 and sys.argv[1] in PIPELINE_COMMANDS:
        signal.signal(signal.SIGTERM, exit_0_on_sigterm)
    from streams.cli import main

    main()


if __name__ == "__main__":
    run()
