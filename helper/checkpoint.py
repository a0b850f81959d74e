"""Checkpoint files: atomic writes, tolerant reads, the weights inside (models/weights.py loads them into a model).

Files keep RepDistiller's keys (``model`` as a plain state_dict, ``epoch``, ``best_acc`` or
``accuracy``, ``optimizer``), so their tools read ours; exact-resume data sits under ``kdzoo``.
"""
import argparse
import errno
import os
import pickle
import re
import socket
import stat
import tempfile
import time
import warnings

import torch

from .errors import CheckpointError, DiskFullError

# argparse namespaces are what RepDistiller stores under 'opt'; allowing them keeps weights_only loading.
torch.serialization.add_safe_globals([argparse.Namespace])



def atomic_save(obj, path):
    """Write ``obj`` to ``path`` so that a crash leaves either the old file or the new one, never half."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True, size=_tensor_bytes(obj))


def atomic_write(path, write, binary=False, size=None):
    """Call ``write(file)`` on a temporary file beside ``path``, flush and fsync it, then rename it over
    ``path``: a crash leaves either the old file or the new one, never half of one.

    The file gets the mode a plain ``open`` would give it (the umask's, or the replaced file's own), not
    the temporary file's 0600, so that others can read checkpoints on a shared server. A full disk (or
    quota) is a ``DiskFullError`` naming the folder and the size (``size``: the expected bytes, if known).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix='.tmp', dir=folder)
    written = 0
    try:
        try:
            os.fchmod(fd, _mode_for(path))
        except OSError:
            pass  # a file system without modes (some network shares); the file is still written
        with os.fdopen(fd, 'wb' if binary else 'w') as f:
            try:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            finally:
                written = os.fstat(f.fileno()).st_size
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        full = disk_full_error(err, folder, f"'{os.path.basename(path)}'", max(size or 0, written), written,
                               kept="the previous one is intact" if os.path.exists(path) else None)
        if full is not None:
            raise full from None
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(dir_fd)


# ---- what the writer leaves behind when it is killed ----------------------------------------------
# Temporary files are named '.<name>.kdzoo-<host>-<pid>-<random>.tmp': the mark tells them from other
# programs' files, and the host and process tell whether their writer is still running.
_TEMP = re.compile(r'^\..+\.kdzoo-(?P<host>[A-Za-z0-9_.]*)-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$')
# What kdzoo's writer made before it marked its files: '.<name>.pth.<8 random>.tmp' (tempfile's pattern).
_OLD_TEMP = re.compile(r'^\..+\.(pth|json)\.[a-z0-9_]{8}\.tmp$')
# A write takes seconds; files of another machine's writer (unknowable) or of the unmarked pattern count as
# stale after this long.
STALE_AFTER_S = 3600


def _host():
    return re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname())[:64]


def _temp_prefix(path):
    return f".{os.path.basename(path)}.kdzoo-{_host()}-{os.getpid()}-"


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: it exists
    return True


def remove_stale_temporaries(folder, recursive=False):
    """Remove the temporary files that killed writers left in ``folder`` (and below it): those of this
    machine whose process is gone, and those older than STALE_AFTER_S. Returns (count, bytes) removed."""
    count = size = 0
    here, now = _host(), time.time()
    walk = os.walk(folder) if recursive else [(folder, None, os.listdir(folder) if os.path.isdir(folder) else [])]
    for where, _, names in walk:
        for name in names:
            match = _TEMP.match(name)
            if match is None and not _OLD_TEMP.match(name):
                continue
            path = os.path.join(where, name)
            try:
                info = os.stat(path)
                old = now - info.st_mtime > STALE_AFTER_S
                if match is not None and match['host'] == here:
                    stale = not _pid_alive(int(match['pid']))
                else:
                    stale = old
                if stale:
                    os.remove(path)
                    count, size = count + 1, size + info.st_size
            except OSError:
                continue  # gone meanwhile, or not ours to remove
    return count, size


# ---- file modes -----------------------------------------------------------------------------------
def _umask():
    """The process's umask, read without changing it where Linux says it (os.umask can only set it)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path):
    """What ``open(path, 'w')`` would leave: an existing file keeps its mode, a new one gets 0666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


# ---- a full disk ----------------------------------------------------------------------------------
def disk_full_cause(err):
    """The OSError behind ``err`` (itself, or what it was raised from: torch.save turns the OSError of a write
    into a RuntimeError) when that is a full disk or an exhausted quota, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        err = err.__cause__ or err.__context__
    return None


def disk_full_error(err, folder, what, size=None, written=None, kept="the previous file is intact"):
    """A one-line DiskFullError when ``err`` is a full disk (``disk_full_cause``), else None."""
    if isinstance(err, DiskFullError):
        return err
    cause = disk_full_cause(err)
    if cause is None:
        return None
    try:
        stats = os.statvfs(folder)
        free = f"{format_bytes(stats.f_bavail * stats.f_frsize)} free"
    except OSError:
        free = "free space unknown"
    problem = "the disk quota is used up" if cause.errno == errno.EDQUOT else "no space left on the device"
    needed = f" needs about {format_bytes(size)}" if size else " did not fit"
    so_far = f" (it stopped after {format_bytes(written)})" if written else ''
    kept = f"; {kept}" if kept else ''
    return DiskFullError(f"{problem} holding '{folder}': {what}{needed}{so_far}, {free}{kept}; free some "
                         f"space there")


def format_bytes(n):
    for unit, scale in (('GB', 1 << 30), ('MB', 1 << 20), ('kB', 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _tensor_bytes(obj, seen=None):
    """Bytes of the tensor storages inside a (nested) checkpoint: what torch.save will write, near enough."""
    seen = set() if seen is None else seen
    if torch.is_tensor(obj):
        storage = obj.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes(), str(obj.device))
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def check_file(path, flag):
    """One line when ``path`` names no file: missing, or a folder (saying which checkpoints it holds)."""
    if os.path.isdir(path):
        inside = sorted(name for name in os.listdir(path) if name.endswith(('.pth', '.pt', '.tar')))
        hint = f" holding {', '.join(inside[:4])}{' ...' if len(inside) > 4 else ''}" if inside else ''
        raise CheckpointError(f"{flag} '{path}' is a directory{hint}; pass the checkpoint file itself "
                              f"(e.g. <model>_best.pth)")
    if not os.path.isfile(path):
        raise CheckpointError(f"{flag} '{path}' does not exist; check the path (train a teacher with "
                              f"train_teacher.py or download one)")


def load_checkpoint(path, flag='checkpoint'):
    """Read a checkpoint onto the CPU, turning every way it can be broken into one clear error.

    Which exception the unpickler raises on a damaged file depends on its bytes (EOFError, KeyError,
    IndexError, OverflowError, MemoryError, UnpicklingError, a zip error...), so any failure to read the
    file is the same one-line CheckpointError; the unpickler's warnings (a protocol it does not know)
    are dropped with a file it cannot read and kept with one it can.
    """
    if not path:
        raise CheckpointError(f"no {flag} given")
    check_file(path, flag)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            checkpoint = _torch_load(path)
        except Exception as err:  # noqa: BLE001  (see the docstring)
            reason = str(err).splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{flag} '{path}' is corrupt or truncated ({reason}); re-download it or "
                                  f"train it again") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return checkpoint


def _torch_load(path):
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if 'weights_only' not in str(err) and 'Weights only' not in str(err):
            raise
        # Other repos store Python objects (numpy scalars, custom classes) next to the weights.
        return torch.load(path, map_location='cpu', weights_only=False)


# Keys under which the repos we read keep the model's weights, most specific first.
STATE_KEYS = ('model', 'state_dict', 'model_state_dict', 'net')


def extract_state_dict(checkpoint, path='checkpoint'):
    """The model weights inside a checkpoint of RepDistiller, SimKD, mdistiller, ND, MCL or ours."""
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in STATE_KEYS:
            if isinstance(checkpoint.get(key), dict):
                state = checkpoint[key]
                break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"'{path}' holds no model weights (looked for a state_dict under "
                              f"{', '.join(STATE_KEYS)}); is it a classification checkpoint?")
    return _strip_prefixes(state)


def _strip_prefixes(state):
    """Remove DataParallel's 'module.' prefix, then keep the student of a whole distiller.

    mdistiller's ``latest``, ``best`` and ``epoch_N`` files hold ``distiller.state_dict()`` of a
    DataParallel-wrapped distiller: ``module.student.*``, ``module.teacher.*`` and the method's own
    modules (``module.abfs.*`` ...). The student is what that run trained (its ``student_*`` files hold
    exactly it), so it is the part to evaluate, to distil from, or to continue training.
    """
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    if any(k.startswith('student.') for k in state):
        state = {k[len('student.'):]: v for k, v in state.items() if k.startswith('student.')}
    return state


def restore_resume_state(owner, model_state, extra_state, expected_keys):
    """Load a resume checkpoint into ``owner`` (an objective or an online method whose network is
    ``owner.model``): the network strictly, then the auxiliary state ``extra_state``, whose keys must be
    ``expected_keys`` (what ``owner.resume_state()`` gives), each mismatch one line. Entries that are no module
    state (an optimiser's) are the caller's to load."""
    if set(extra_state) != set(expected_keys):
        raise CheckpointError("the resume checkpoint was written by a different method or settings "
                              "(its auxiliary modules differ); resume with the original command")
    try:
        owner.model.load_state_dict(model_state, strict=True)
    except RuntimeError:
        raise CheckpointError("the resume checkpoint holds another architecture's weights; resume "
                              "with the command that started the run") from None
    owner.load_state_dict({**{'model.' + k: v for k, v in model_state.items()}, **extra_state}, strict=False)
