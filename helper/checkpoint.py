"""Checkpoint files: atomic writes, tolerant reads, and weights from other repos' formats.

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

# Keys under which the repos we read keep the model's weights, most specific first.
STATE_KEYS = ('model', 'state_dict', 'model_state_dict', 'net')


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


# The ND repo names two layers differently from RepDistiller: (their prefix, ours).
ND_RENAMES = (('bn.', 'bn1.'), ('fc.', 'linear.'))


def adapt_keys(state, model):
    """Rename keys of checkpoints that spell a layer differently (ND), when that makes them fit."""
    wanted = set(model.state_dict())
    if set(state) == wanted:
        return state
    for theirs, ours in ND_RENAMES:
        renamed = {(ours + k[len(theirs):] if k.startswith(theirs) else k): v for k, v in state.items()}
        if set(renamed) == wanted:
            return renamed
    return state


def load_weights(model, path, model_name, flag='checkpoint'):
    """Load a checkpoint's weights into ``model`` strictly; returns the checkpoint dict.

    A checkpoint of another architecture gives one line naming what it seems to be instead.
    """
    checkpoint = load_checkpoint(path, flag)
    load_state_strictly(model, extract_state_dict(checkpoint, path), path, model_name, flag)
    return checkpoint if isinstance(checkpoint, dict) else {}


def load_state_strictly(model, state, path, model_name, flag='checkpoint'):
    """Load a state dict (already taken out of its checkpoint) with strict=True, renaming ND's layers;
    one line naming the architecture it seems to be when it does not fit."""
    state = adapt_keys(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        from models.registry import guess_architectures
        guesses = guess_architectures(state)
        classes = [v.shape[0] for k, v in state.items() if k.endswith('weight') and v.dim() == 2][-1:]
        if model_name in guesses and classes:
            raise CheckpointError(f"{flag} '{path}' is a {model_name} for {classes[0]} classes, but the "
                                  f"data set has {model.get_classifier().out_features}; pass the --dataset "
                                  f"it was trained on") from None
        seems = f"it looks like {' or '.join(guesses)}" if guesses else "no known architecture matches it"
        raise CheckpointError(f"{flag} '{path}' does not fit {model_name} ({seems}); pass the architecture "
                              f"it was trained with") from None
