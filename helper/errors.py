"""User-facing errors.

Anything the user can fix (a bad flag, a missing file, a corrupt checkpoint) raises ``KDZooError``
with one sentence that says what is wrong and what to do. The command-line entry points catch it
in ``run_cli`` and print that sentence alone: no traceback, exit status 2. Bugs still raise
ordinary exceptions and show their traceback. SIGINT and SIGTERM end a run with one line too
(helper/signals.py), exit status 130 and 143. The classes are defined in helper/exceptions.py (which
helper/distributed.py imports, so that this module may import it back without a circle) and are
imported from here.
"""
import signal
import sys

from . import signals
from .distributed import current
from .exceptions import CheckpointError, DatasetError, DiskFullError, KDZooError, NonFiniteLossError

__all__ = ['KDZooError', 'DatasetError', 'CheckpointError', 'NonFiniteLossError', 'DiskFullError', 'run_cli']


def run_cli(main, argv=None):
    """Run ``main(argv)`` and turn user errors, Ctrl-C and SIGTERM into one line and an exit status."""
    with signals.handlers():
        try:
            return main(argv)
        except KDZooError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(getattr(err, 'exit_status', 2))  # 2: a mistake to fix; 1: a job or a disk that failed
        except KeyboardInterrupt as err:
            signum = getattr(err, 'signum', None) or signals.received() or signal.SIGINT
            detail = getattr(err, 'detail', None)  # what a training loop kept; nothing to add elsewhere
            if _prints_for_the_job():
                print(f"interrupted by {signal.Signals(signum).name}{': ' + detail if detail else ''}",
                      file=sys.stderr)
            sys.exit(128 + signum)


def _prints_for_the_job():
    """One line per job: under torchrun every worker runs run_cli, and rank 0 speaks for them."""
    return current().is_main
