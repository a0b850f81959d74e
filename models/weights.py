"""Model weights out of a checkpoint of RepDistiller, SimKD, mdistiller, ND, MCL or kdzoo, into a model."""
from helper.checkpoint import STATE_KEYS, extract_state_dict, load_checkpoint  # noqa: F401  (read here)
from helper.errors import CheckpointError

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
        raise misfit(model, state, path, model_name, flag) from None


def fits(model, state):
    """Whether ``model.load_state_dict(state, strict=True)`` would succeed: the same keys, the same shapes."""
    wanted = model.state_dict()
    return set(state) == set(wanted) and all(
        getattr(state[k], 'shape', None) == wanted[k].shape for k in wanted)


def misfit(model, state, path, model_name, flag='checkpoint'):
    """The one-line error of weights that do not fit ``model``, naming the architecture they seem to be."""
    from .registry import guess_architectures
    guesses = guess_architectures(state)
    classes = [v.shape[0] for k, v in state.items() if k.endswith('weight') and v.dim() == 2][-1:]
    classifier = getattr(model, 'get_classifier', None)
    if model_name in guesses and classes and callable(classifier):
        return CheckpointError(f"{flag} '{path}' is a {model_name} for {classes[0]} classes, but the "
                               f"data set has {classifier().out_features}; pass the --dataset "
                               f"it was trained on")
    seems = f"it looks like {' or '.join(guesses)}" if guesses else "no known architecture matches it"
    return CheckpointError(f"{flag} '{path}' does not fit {model_name} ({seems}); pass the architecture "
                           f"it was trained with")


def check_resume_fits(objective, path, model_name):
    """One line, before a run writes anything, when the --resume checkpoint at ``path`` cannot continue
    ``objective``: weights of another architecture or class count (``model``), or, for a kdzoo checkpoint,
    the auxiliary modules of another method or settings. An init-stage checkpoint is left to its stage."""
    flag = '--resume checkpoint'
    checkpoint = load_checkpoint(path, flag)
    saved = checkpoint.get('kdzoo') if isinstance(checkpoint, dict) else None
    if isinstance(saved, dict):
        if (saved.get('stage') or 'main') != 'main':
            return
        state = checkpoint.get('model')
        if not isinstance(state, dict):
            raise CheckpointError(f"{flag} '{path}' holds no 'model' weights; resume from the run's "
                                  f"<name>_last.pth")
        if not fits(objective.model, state):
            raise misfit(objective.model, state, path, model_name, flag)
        extra = saved.get('objective')
        if isinstance(extra, dict) and set(extra) != set(objective.resume_state()):
            raise CheckpointError(f"{flag} '{path}' was written by a different method or settings (its "
                                  f"auxiliary modules differ); resume with the command that started the run")
        return
    state = adapt_keys(extract_state_dict(checkpoint, path), objective.model)
    if not fits(objective.model, state):
        raise misfit(objective.model, state, path, model_name, flag)

