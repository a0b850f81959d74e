"""The teacher side of a method: what it asks of the teacher for a batch (``TeacherRequest``), the one
function that runs the teacher for such a request (``run_teacher``, for a single run and, once per merged
pass, for a pack), how several requests merge into the fewest passes (``shared_passes``, ``served_output``),
the dummy forward methods build their modules from (``probe_networks``), and ``Borrowed``, a teacher module a
method uses without owning it."""
from dataclasses import dataclass, replace
from typing import Optional

import torch

from models.features import NetOutput, run_network


@dataclass(frozen=True)
class TeacherRequest:
    """What the teacher computes for a batch: its output on ``view`` (None: the batch's training images;
    'rotations': SSKD's four rotated views), with features (pre-ReLU ones with ``preact``), and its logits
    on the extra ``views``; nothing at all when not ``needed`` (a step whose terms never read the teacher).
    ``pooled_map``: also the map the teacher pools into its classifier (``NetOutput.pooled_map``; SDD, CAT-KD)."""
    feats: bool = False
    preact: bool = False
    views: tuple = ()
    view: Optional[str] = None
    needed: bool = True
    pooled_map: bool = False


@torch.no_grad()
def run_teacher(teacher, batch, request):
    """The teacher's ``NetOutput`` for ``batch`` as ``request`` asks, computed without autograd (None when
    the request says the teacher is not needed)."""
    if not request.needed:
        return None
    images = batch.images if request.view is None else batch.view(request.view)
    out_t = run_network(teacher, images, request.feats, request.preact, request.pooled_map)
    for view in request.views:
        out_t.views[view] = NetOutput(teacher(batch.view(view)))
    return out_t


def shared_passes(requests):
    """The requests whose ``run_teacher`` outputs serve every one of ``requests`` with the fewest forwards.

    Per input read (the training images, or a request's ``view``): one pass with features if any request
    reads them, else with logits only, and a second, pre-ReLU pass only if some request reads pre-ReLU maps
    (a request for logits alone reads that one when it is the only pass: the logits are the same with or
    without features, plain or pre-ReLU, in eval mode). Each extra view is run once, with the first pass.
    The pooled map, where a request reads it, comes with the first pass of its input (it does not depend on
    ``preact``). Requests that are not ``needed`` add nothing."""
    needed = [r for r in requests if r.needed]
    passes = []
    for view in sorted({r.view for r in needed}, key=str):
        mine = [r for r in needed if r.view == view]
        plain_feats = any(r.feats and not r.preact for r in mine)
        preact_feats = any(r.feats and r.preact for r in mine)
        pooled = any(r.pooled_map for r in mine)
        if plain_feats or not preact_feats:
            passes.append(TeacherRequest(plain_feats, False, view=view, pooled_map=pooled))
            pooled = False
        if preact_feats:
            passes.append(TeacherRequest(True, True, view=view, pooled_map=pooled))
    views = tuple(sorted({view for r in needed for view in r.views}))
    if views:
        passes[0] = replace(passes[0], views=views)
    return passes


def served_output(request, passes, outputs):
    """What ``run_teacher(teacher, batch, request)`` returns, taken from ``outputs``, the ``run_teacher``
    outputs of ``passes`` (``shared_passes`` of requests that include this one)."""
    if not request.needed:
        return None
    mine = {p.preact: out for p, out in zip(passes, outputs) if p.view == request.view}
    source = mine[request.preact] if request.feats else mine.get(False, mine.get(True))
    pooled = None
    if request.pooled_map:
        pooled = next(out.pooled_map for p, out in zip(passes, outputs) if p.view == request.view and p.pooled_map)
    return NetOutput(source.logits, source.feats if request.feats else None, pooled,
                     views={name: outputs[0].views[name] for name in request.views})


@torch.no_grad()
def probe_networks(student, teacher, preact, size, memory_format=torch.contiguous_format):
    """One eval-mode forward of both networks on two random ``size`` x ``size`` images: the feature shapes
    a method builds its modules for (as RepDistiller does); the student's mode is restored."""
    images = torch.randn(2, 3, size, size, device=next(student.parameters()).device)
    images = images.contiguous(memory_format=memory_format)
    was_training = student.training
    student.eval()
    try:
        return run_network(student, images, True, preact), run_network(teacher, images, True, preact)
    finally:
        student.train(was_training)


class Borrowed:
    """A module a method uses but does not own (the teacher's classifier): held by reference, so it is no
    submodule of the method, never trained, saved, moved or counted with it. Call it as the module."""
    __slots__ = ('module',)

    def __init__(self, module):
        self.module = module

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)
