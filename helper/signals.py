"""Stopping on SIGINT (Ctrl-C) and SIGTERM (what SLURM, Kubernetes and torchrun send before they kill a job).

With ``handlers()`` installed (the command-line entry points and spawned workers do), a stop signal raises
``Interrupted``, a KeyboardInterrupt, so everything that cleans up after Ctrl-C does so after SIGTERM too.
It raises at the next Python instruction, within seconds, except inside ``deferred()`` sections (an epoch's
checkpoint and log writes), which it lets finish first: the files on disk then always describe whole
epochs. Only the first signal raises; later ones (a scheduler signalling every process of a job, then the
launcher forwarding SIGTERM to its workers) do not break into the clean-up the first one started.
"""
import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived. ``detail`` (set once known) says what was kept and how to go on."""

    def __init__(self, signum=signal.SIGINT, detail=None):
        super().__init__(signum)
        self.signum = int(signum)
        self.detail = detail

    @property
    def exit_status(self):
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    @property
    def signal_name(self):
        return signal.Signals(self.signum).name


_STATE = dict(received=None, raised=False, depth=0)


def _reset():
    _STATE.update(received=None, raised=False, depth=0)


def _handler(signum, frame):
    if _STATE['received'] is None:
        _STATE['received'] = signum
    if _STATE['raised'] or _STATE['depth']:
        return  # already stopping, or inside a write that must finish: deferred() raises at its end
    _STATE['raised'] = True
    raise Interrupted(signum)


def received():
    """The first stop signal this process got (None if none): tells an interruption from a failure when a
    collective breaks because another process of the job stopped first."""
    return _STATE['received']


def install():
    """Handle SIGINT and SIGTERM for the rest of the process (a spawned worker); returns the old handlers."""
    _reset()
    return {signum: signal.signal(signum, _handler) for signum in STOP_SIGNALS}


@contextlib.contextmanager
def handlers():
    """Handle SIGINT and SIGTERM inside the block, then restore the previous handlers (so that calling an
    entry point from Python, as the tests do, leaves the caller's handlers as they were)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; Python's own SIGINT handling stays
        return
    previous = install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _reset()


@contextlib.contextmanager
def deferred(then_raise=True):
    """A stop signal arriving inside waits until the block is done, then raises ``Interrupted`` (unless
    ``then_raise`` is False: the caller is stopping already and will report why)."""
    _STATE['depth'] += 1
    try:
        yield
    finally:
        _STATE['depth'] -= 1
    if then_raise and not _STATE['depth'] and _STATE['received'] is not None and not _STATE['raised']:
        _STATE['raised'] = True
        raise Interrupted(_STATE['received'])
