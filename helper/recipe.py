"""Epoch constants pinned to a reference recipe, scaled to the run's own.

Some methods' schedules are written for one recipe's length: mdistiller's 20-epoch warm-ups of DKD (and
SDD-DKD, SDD-NKD), ReviewKD, MKL (NTCE-KD) and RLD, ND's 20-epoch warm-up of the ++ methods, NORM's loss
multiplier with steps at epochs 10, 20, 180, 210, and (online) ONE's 80-epoch ramp-up of its 300-epoch recipe
(online/one.py passes that reference itself). On CIFAR (and digits, CIFAR-10) that recipe is 240
epochs; on ImageNet it is the 100 epochs of mdistiller's, ND's and NORM's ImageNet scripts (warm-ups 1 and 5,
NORM's steps 5, 15, 60, 80).

A run of another length gets every such value that the user did not type scaled to it:
``round(value * epochs / reference)``, halves rounded up, a positive value kept at least 1
(``scale_epochs``). At the reference length nothing changes. A value given on the command line
(``--dkd_warmup 20``) is never scaled; ``--no_recipe_scaling`` keeps every pinned constant as it is.

How: the method's ``settings`` marks a default it fills with ``pin`` (before the epochs are known);
``settle_schedule`` runs once the recipe is resolved and writes ``args.recipe_schedule``, {name: value
used} of every pinned value that scaling changed (empty when none did), which the run records and prints.
A method reads its value with ``scheduled``.
"""
import math

__all__ = ['REFERENCE_EPOCHS', 'reference_epochs', 'scale_epochs', 'pin', 'unpin', 'settle_schedule',
           'scheduled', 'schedule_note', 'add_recipe_scaling_argument']

REFERENCE_EPOCHS = {'cifar': 240, 'imagenet': 100}


def reference_epochs(dataset):
    """The length of the recipe the methods' pinned epoch constants were written for on ``dataset``."""
    return REFERENCE_EPOCHS['imagenet' if dataset == 'imagenet' else 'cifar']


def scale_epochs(value, epochs, reference):
    """``value`` (an epoch count, or a list of them) of a ``reference``-epoch recipe in an ``epochs``-epoch
    run: value * epochs / reference rounded half up, at least 1 unless 0; ``value`` itself when the
    lengths are equal."""
    if isinstance(value, (list, tuple)):
        return [scale_epochs(v, epochs, reference) for v in value]
    if epochs == reference or not value:
        return value
    return max(1, math.floor(value * epochs / reference + 0.5))


def pin(args, name, value=None, reference=None):
    """Mark ``name`` as a constant pinned to the reference recipe: ``args.<name>`` as the method filled it
    (not typed), or ``value`` for a constant that is no flag (NORM's steps)."""
    pinned = dict(getattr(args, 'recipe_pinned', None) or {})
    value = getattr(args, name) if value is None else value
    pinned[name] = [list(value) if isinstance(value, (list, tuple)) else value,
                    reference or reference_epochs(getattr(args, 'dataset', 'cifar100'))]
    args.recipe_pinned = pinned


def unpin(args, name):
    """Forget a pinned value the method does not use (ND's ++ methods switch the base's warm-up off)."""
    pinned = dict(getattr(args, 'recipe_pinned', None) or {})
    pinned.pop(name, None)
    args.recipe_pinned = pinned


def settle_schedule(args):
    """``args.recipe_schedule``: {name: scaled value} of the pinned values that ``args.epochs`` changes
    (none with --no_recipe_scaling). Returns it."""
    schedule = {}
    if not getattr(args, 'no_recipe_scaling', False) and getattr(args, 'epochs', None):
        for name, (value, reference) in (getattr(args, 'recipe_pinned', None) or {}).items():
            scaled = scale_epochs(value, args.epochs, reference)
            if scaled != value:
                schedule[name] = scaled
    args.recipe_schedule = schedule
    return schedule


def scheduled(args, name, pinned=None):
    """The value of ``name`` the run uses: the scaled one where scaling changed it, else ``pinned`` (for a
    constant that is no flag) or ``args.<name>``."""
    schedule = getattr(args, 'recipe_schedule', None) or {}
    if name in schedule:
        value = schedule[name]
        return tuple(value) if isinstance(pinned, tuple) else value
    return getattr(args, name) if pinned is None else pinned


def schedule_note(args):
    """'schedules scaled to 12 of 240 epochs: dkd_warmup 20 -> 1', or '' when nothing was scaled."""
    schedule = getattr(args, 'recipe_schedule', None) or {}
    if not schedule:
        return ''
    pinned = args.recipe_pinned
    reference = sorted({pinned[name][1] for name in schedule})
    shown = ', '.join(f"{name} {_show(pinned[name][0])} -> {_show(value)}" for name, value in schedule.items())
    return (f"schedules scaled to {args.epochs} of {'/'.join(map(str, reference))} epochs: {shown} "
            f"(--no_recipe_scaling keeps them)")


def _show(value):
    return ','.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def add_recipe_scaling_argument(group):
    group.add_argument('--no_recipe_scaling', action='store_true',
                       help='keep the epoch constants that methods pin to their reference recipe (240 epochs; '
                            'ImageNet 100): the 20-epoch warm-ups of DKD, SDD, ReviewKD, MKL, NTCE, RLD and ND\'s ++ '
                            'methods, NORM\'s multiplier steps 10, 20, 180, 210. Without it a run of other '
                            '--epochs gets those it did not set scaled by epochs / reference, rounded half up')
