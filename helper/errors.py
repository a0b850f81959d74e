"""User-facing errors.

Anything the user can fix (a bad flag, a missing file, a corrupt checkpoint) raises ``KDZooError``
with one sentence that says what is wrong and what to do. The command-line entry points catch it
in ``run_cli`` and print that sentence alone: no traceback, exit status 2. Bugs still raise
ordinary exceptions and show their traceback.
"""
import sys


class KDZooError(Exception):
    """An error the user can fix; its message is shown as one line."""


class DatasetError(KDZooError):
    """The data set is missing, incomplete or unreadable."""


class CheckpointError(KDZooError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


class NonFiniteLossError(KDZooError):
    """The loss became NaN or infinite; training stopped."""


def run_cli(main, argv=None):
    """Run ``main(argv)`` and turn user errors and Ctrl-C into one line and an exit status."""
    try:
        return main(argv)
    except KDZooError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, 'exit_status', 2))  # 2: a mistake to fix; 1: a distributed job that failed
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is saved; continue with --resume auto",
              file=sys.stderr)
        sys.exit(130)
