"""``--add``: a second logit loss in the alpha slot, as zkxufo/TTM's train_student.py combines two losses.

The TTM repo's loss is ``gamma * CE + alpha * criterion_div + beta * criterion_kd`` (helper/loops.py), where
``--distill`` picks criterion_kd and ``--add`` (kd, ttm or wttm; default kd) picks criterion_div, weighed by
``-a``. kdzoo's composition has the same slots (``Distiller.ce_kd_terms``: KD in the alpha slot), so ``--add kd``
is every method's own default and ``--add <method>`` puts that method's loss where KD was, for every
``--distill`` method. The README's combination runs as written::

    python train_student.py --path_t ./save/models/vgg13_vanilla/ckpt_epoch_240.pth --model_s vgg8 \\
        --distill crd --add wttm --ttm_l 0.2 -b 0.8 -a 4 --trial 1

Beyond the repo's kd/ttm/wttm, any registered method can be added whose loss reads only the two networks'
logits and is composed the default way (``Distiller.add_refusal``: DKD, DIST, MKL, NKD, WSLD...), without
modules of its own to train and without loader options; the rest (feature methods such as CRD, methods with
their own step) are refused in one line: train them as ``--distill`` and add the logit loss to them.

``-a`` not given with ``--add <method>`` is that method's own default weight for its loss (wttm 4, the
README's CRD + WTTM value; ttm 45), not the ``--distill`` method's KD weight; the official script has no
default there (``-a`` is None, and its ``opt.alpha > 0`` stops the run unless ``-a`` is given). The added
method's own flags (``--ttm_l``...) are settled after the ``--distill`` method's, with its defaults when not
given; where both read one flag (``--distill ttm --add wttm``: ``--ttm_l``), as in the repo, one value serves both.
"""
from helper.errors import KDZooError
from .registry import DISTILLERS

def add_add_argument(group):
    """``--add`` on train_student.py's command line."""
    group.add_argument('--add', default='kd',
                       help="loss in the -a slot (zkxufo/TTM's --add): kd (default), ttm, wttm, or any "
                            "logit-only method (dkd, dist, ...); -a defaults to that method's own weight")


def added_method(args):
    """The class of ``args.add``, or None for kd (every method's own alpha slot) and when absent."""
    name = getattr(args, 'add', 'kd') or 'kd'
    name = DISTILLERS.lookup(name, '--add')
    args.add = name
    return None if name == 'kd' else DISTILLERS[name]


def settle_add(method, args):
    """The class of --add (None for kd), or one line for a method that cannot be added to ``method``. Its
    flags and the -a it implies are settled by ``flags.settle``, after the ``--distill`` method's."""
    added = added_method(args)
    if added is None:
        return None
    refusal = added.add_refusal()
    if refusal is None and added.data_options(args):
        refusal = "it needs loader options of its own"
    if refusal is not None:
        raise KDZooError(f"--add {added.name} cannot be added to {method.name}: {refusal}; --add takes a "
                         f"loss on the logits (kd, ttm, wttm, dkd, dist...), so train {added.name} as --distill")
    return added


def attach_added(method, args, student, teacher, probe_s, probe_t, data, device):
    """Build the --add method of settled ``args`` (if any) beside ``method``, on ``device``, and attach it."""
    added = added_method(args)
    if added is not None:
        method.attach_added(added(args, student, teacher, probe_s, probe_t, data).to(device))
    return method
