"""The teacher side of a method: what it asks of the teacher for a batch (``TeacherRequest``), the one
function that runs the teacher for such a request (``run_teacher``), the dummy forward methods build their
modules from (``probe_networks``), and ``Borrowed``, a teacher module a method uses without owning it."""
from dataclasses import dataclass
from typing import Optional

import torch

from models.features import NetOutput, run_network


@dataclass(frozen=True)
class TeacherRequest:
    """What the teacher computes for a batch: its output on ``view`` (None: the batch's training images;
    'rotations': SSKD's four rotated views), with features (pre-ReLU ones with ``preact``), and its logits
    on the extra ``views``; nothing at all when not ``needed`` (a step whose terms never read the teacher)."""
    feats: bool = False
    preact: bool = False
    views: tuple = ()
    view: Optional[str] = None
    needed: bool = True


@torch.no_grad()
def run_teacher(teacher, batch, request):
    """The teacher's ``NetOutput`` for ``batch`` as ``request`` asks, computed without autograd (None when
    the request says the teacher is not needed)."""
    if not request.needed:
        return None
    images = batch.images if request.view is None else batch.view(request.view)
    out_t = run_network(teacher, images, request.feats, request.preact)
    for view in request.views:
        out_t.views[view] = NetOutput(teacher(batch.view(view)))
    return out_t


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
