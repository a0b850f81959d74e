"""Checkpoint files: atomic writes and tolerant reads (models/weights.py finds the weights inside).

Files keep RepDistiller's keys (``model`` as a plain state_dict, ``epoch``, ``best_acc`` or
``accuracy``, ``optimizer``), so their tools read ours; exact-resume data sits under ``kdzoo``.
"""
import argparse
import os
import pickle
import tempfile
import zipfile

import torch

from .errors import CheckpointError

# argparse namespaces are what RepDistiller stores under 'opt'; allowing them keeps weights_only loading.
torch.serialization.add_safe_globals([argparse.Namespace])



def atomic_save(obj, path):
    """Write ``obj`` to ``path`` so that a crash leaves either the old file or the new one, never half."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def atomic_write(path, write, binary=False):
    """Call ``write(file)`` on a temporary file beside ``path``, flush and fsync it, then rename it over
    ``path``: a crash leaves either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb' if binary else 'w') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(dir_fd)


def load_checkpoint(path, flag='checkpoint'):
    """Read a checkpoint onto the CPU, turning every way it can be broken into one clear error."""
    if not path:
        raise CheckpointError(f"no {flag} given")
    if not os.path.isfile(path):
        raise CheckpointError(f"{flag} '{path}' does not exist; check the path (train a teacher with "
                              f"train_teacher.py or download one)")
    try:
        try:
            return torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as err:
            if 'weights_only' not in str(err) and 'Weights only' not in str(err):
                raise
            # Other repos store Python objects (numpy scalars, custom classes) next to the weights.
            return torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ModuleNotFoundError, OSError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(f"{flag} '{path}' is corrupt or truncated ({reason}); re-download it or "
                              f"train it again") from None
