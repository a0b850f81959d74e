"""A Distiller for your own training loop, from a teacher, a student and a few keyword arguments.

    from distiller_zoo import build_distiller, run_teacher
    method = build_distiller('crd', student, teacher, model_s='resnet8x4', model_t='resnet32x4',
                             num_train=50000, nce_k=4096)
    optimizer = torch.optim.SGD([*student.parameters(), *method.parameters()], lr=0.05, momentum=0.9)
    for batch in loader:                     # anything with .images and .targets (CRD: .indices, .contrast_idx)
        out_t = run_teacher(teacher, batch, method.teacher_request())
        logits, losses = method.forward_train(student, batch, out_t, epoch)
        optimizer.zero_grad(); sum(losses.values()).backward(); optimizer.step()

The flags are train_student.py's, as keyword arguments by their long name (``gamma``, ``alpha``, ``beta``,
``kd_T``, ``factor``, ``nce_k``, ``dkd_beta`` ...); those not given take the method's published defaults,
exactly as on the command line (per pair where the method has per-pair values, so name the pair).
"""
import argparse
import difflib
from types import SimpleNamespace

import torch

from helper.errors import KDZooError
from .add import attach_added
from .flags import add_loss_weights, add_method_arguments, settle
from .registry import DISTILLERS, method_name
from .teacher import probe_networks

__all__ = ['build_distiller', 'method_flags']


def method_flags():
    """The long names (``dest``) and defaults of every method flag and loss weight."""
    parser = argparse.ArgumentParser(add_help=False)
    add_loss_weights(parser)
    add_method_arguments(parser)
    return vars(parser.parse_args([]))


def build_distiller(name, student, teacher, *, dataset='cifar100', model_s=None, model_t=None,
                    batch_size=64, learning_rate=0.05, num_train=None, train_labels=None, data=None,
                    path_t=None, input_size=None, **flags):
    """The ``--distill name`` method for ``student`` and ``teacher`` (built, on their device; the teacher is
    put in eval mode and frozen). ``model_s``/``model_t`` are the zoo names that select per-pair defaults;
    ``num_train`` (and ``train_labels`` for CRD's 'relax' mode) describe the training set for methods with
    memory banks, or pass ``data``, a ``dataset.DataBundle``; ``path_t`` is where ND's class-centre file
    lives (beside the teacher checkpoint). Unknown flag names are one-line errors."""
    key = method_name(name, 'method')
    method_cls = DISTILLERS[key]
    defaults = method_flags()
    unknown = sorted(set(flags) - set(defaults))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(defaults), n=1)
        raise KDZooError(f"build_distiller got an unknown flag '{unknown[0]}'"
                         f"{f' (did you mean {close[0]}?)' if close else ''}")
    args = argparse.Namespace(**{**defaults, **flags}, distill=key, dataset=dataset, model_s=model_s,
                              model_t=model_t, batch_size=batch_size, learning_rate=learning_rate,
                              path_t=path_t)
    settle(method_cls, args)
    if data is None:
        labels = train_labels if train_labels is not None else torch.zeros(num_train or 0, dtype=torch.long)
        data = SimpleNamespace(num_train=num_train, train_labels=labels, num_classes=None, train=None)
    teacher.eval().requires_grad_(False)
    probe_s, probe_t = probe_networks(student, teacher, method_cls.preact,
                                      input_size or (224 if dataset == 'imagenet' else 32))
    device = next(student.parameters()).device
    method = method_cls(args, student, teacher, probe_s, probe_t, data).to(device)
    return attach_added(method, args, student, teacher, probe_s, probe_t, data, device)

