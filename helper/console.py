"""log.txt: what a run prints, kept in its run folder, with the lines only the log gets.

``logged(train)`` runs a script's ``train(args)`` with stdout copied into a log. Lines printed before the
run folder exists (the header, the teacher's accuracy) are held until ``RunFiles.create`` names the file
(``attach``) and training starts (``commit``, from the training loop), so log.txt starts with the run's
first line. A command that stops before training starts (refused: resuming a finished run, a checkpoint of
another architecture) leaves save/ as it was, log.txt included; it said why on the console. Each line is
stamped with the time. A resumed run appends to its log.txt; ``--overwrite`` starts it afresh. Only the
process that creates the run folder (rank 0 of a multi-process job) writes a log; the others discard theirs.
A log that cannot be written (disk full) is dropped with one warning: it never stops a run.
"""
import contextlib
import functools
import sys
import threading
import time

from .errors import KDZooError

LOG_NAME = 'log.txt'
HELD_LINES = 10000  # lines kept before the file is known; a run prints a few dozen there

_ACTIVE = None


class RunLog:
    """The printed lines of one process's run, written to the attached log files: one for a run, one per
    member for a pack of students (engine/pack.py), each then holding the pack's whole console."""

    def __init__(self):
        self.held = []
        self.partial = ''
        self.files = []           # open log files, from commit on
        self.targets = []         # (path, fresh) attached, in order
        self.broken = False
        self.lock = threading.Lock()

    def add(self, text):
        """Take printed text; every completed line goes to the files (or is held until there are some)."""
        with self.lock:
            lines = (self.partial + text).split('\n')
            self.partial = lines.pop()
            for line in lines:
                self._line(line)

    def _line(self, line):
        stamped = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line.rstrip(chr(13))}\n"
        if not self.files:
            if len(self.held) < HELD_LINES and not self.broken:
                self.held.append(stamped)
            return
        try:
            for file in self.files:
                file.write(stamped)
        except OSError as err:
            self._drop(err)

    def attach(self, path, fresh):
        with self.lock:
            if path not in [target for target, _ in self.targets]:
                self.targets.append((path, fresh))

    def commit(self):
        """Open the attached files (if any) and write what was held; from now on lines go straight there."""
        with self.lock:
            if self.files or self.broken or not self.targets:
                return
            for path, fresh in self.targets:
                try:
                    file = open(path, 'w' if fresh else 'a', encoding='utf-8', buffering=1)
                    self.files.append(file)
                    file.writelines(self.held)
                except OSError as err:
                    self._drop(err, path)
                    return
            self.held = []

    def _drop(self, err, path=None):
        where = f" '{path}'" if path else ''
        sys.__stderr__.write(f"warning: cannot write the run log{where} ({err.strerror or err}); the run goes on "
                             f"without it\n")
        self.broken = True
        self.held = []
        self._close_files()

    def _close_files(self):
        for file in self.files:
            with contextlib.suppress(OSError):
                file.close()
        self.files = []

    def close(self):
        if self.partial:
            self.add('\n')
        with self.lock:
            self._close_files()


class _Tee:
    """Stands in for sys.stdout: writes through to it and copies the text into the log."""

    def __init__(self, stream, log):
        self._stream = stream
        self._log = log

    def write(self, text):
        self._stream.write(text)
        self._log.add(text)
        return len(text)

    def flush(self):
        self._stream.flush()

    def isatty(self):
        return self._stream.isatty()

    def __getattr__(self, name):  # encoding, fileno, buffer...: the real stream's
        return getattr(self._stream, name)


@contextlib.contextmanager
def capture():
    """Copy stdout into a RunLog for the duration; a one-line error or an interruption is logged too."""
    global _ACTIVE
    log, previous, outer = RunLog(), sys.stdout, _ACTIVE
    sys.stdout, _ACTIVE = _Tee(previous, log), log
    try:
        yield log
    except KDZooError as err:
        log.add(f"error: {err}\n")
        raise
    except KeyboardInterrupt:
        log.add("interrupted: the last completed epoch is saved; continue with --resume auto\n")
        raise
    finally:
        sys.stdout, _ACTIVE = previous, outer
        log.close()


def logged(train):
    """``train(args)`` with its output kept in the run folder's log.txt."""
    @functools.wraps(train)
    def run(args):
        with capture():
            return train(args)
    return run


def attach(path, fresh=False):
    """The active log's file (appended to unless ``fresh``), written from ``commit`` on; no-op outside
    ``capture``."""
    if _ACTIVE is not None:
        _ACTIVE.attach(path, fresh)


def commit():
    """Training starts: the log is written from here on (called by the training loop)."""
    if _ACTIVE is not None:
        _ACTIVE.commit()


def log_only(line):
    """A line for the log alone (the console shows it otherwise, or not at all)."""
    if _ACTIVE is not None:
        _ACTIVE.add(line + '\n')
