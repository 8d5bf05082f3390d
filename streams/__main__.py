"""``python -m streams`` and the ``streams`` console script.

A pipeline process (worker, sinks, monitor) that gets SIGTERM before its own handling is in
place exits at once with status 0: nothing has been read, so there is nothing to finish. The
handler goes in before anything is imported, so a supervisor stopping a process that is still
starting never sees it killed by the signal (status -15).
"""

import signal
import sys

PIPELINE_COMMANDS = frozenset({"worker", "sink", "totals-writer", "action-sink",
                               "progress-writer", "monitor"})
"""Commands that run until stopped; every other command keeps the default SIGTERM action."""


def _exit_0(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run() -> None:
    """Run the ``streams`` command line."""
    if len(sys.argv) > 1 and sys.argv[1] in PIPELINE_COMMANDS:
        signal.signal(signal.SIGTERM, _exit_0)
    from streams.cli import main

    main()


if __name__ == "__main__":
    run()
