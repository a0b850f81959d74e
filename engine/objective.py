"""What a training step optimises: the interface between a script and the shared training loop.

An ``Objective`` owns the network being trained (``self.model``, the one that is deployed and saved
under the checkpoint's ``model`` key) and anything else a method needs (a frozen teacher, trainable
projectors, memory banks). The loop only calls the methods below, so teacher training, every
distillation method and online training share one loop.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.teacher import run_teacher
from helper.checkpoint import restore_resume_state
from helper.errors import KDZooError
from engine.loop import evaluate_predictions


@dataclass
class StepOutput:
    losses: dict          # name -> already-weighted scalar loss term; their sum is minimised
    logits: torch.Tensor  # the trained network's logits, for the training accuracy


class Objective(nn.Module):
    # Submodules never saved in resume checkpoints because the script rebuilds them (the teacher).
    rebuilt_prefixes = ('teacher.',)

    def trainable_modules(self):
        """Modules whose parameters the optimiser updates."""
        return [self.model]

    def step(self, batch, epoch):
        raise NotImplementedError

    def predict(self, images):
        """Logits of the network as deployed (SimKD, for one, adds the teacher's classifier)."""
        return self.model(images)

    def checkpoint_extras(self):
        """Entries saved beside ``model`` in every checkpoint (e.g. SimKD's ``proj``)."""
        return {}

    # Hooks for objectives that train several networks at once (train_online_mcl.py); no-ops otherwise.
    def validate(self, loader, device, precision):
        """Top-1, top-5 and mean loss of the deployed network, and a dict of extra numbers for the
        epoch record (online training: every peer and auxiliary head)."""
        return (*evaluate_predictions(self.predict, loader, device, precision), {})

    def after_step(self, batch, epoch, step, lr):
        """Called after each optimiser step with the 1-based step and the lr (L-MCL's meta-optimisation)."""

    def after_epoch(self, state, files):
        """Called once an epoch's checkpoints are written (online training exports every peer)."""

    def resume_state(self):
        """Everything besides ``model`` that an exact resume needs (projectors, memory banks)."""
        skip = ('model.',) + self.rebuilt_prefixes
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def load_resume_state(self, model_state, extra_state):
        restore_resume_state(self, model_state, extra_state, self.resume_state())


class SupervisedObjective(Objective):
    """Cross-entropy on the labels: teacher and baseline training."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def step(self, batch, epoch):
        logits = self.model(batch.images)
        return StepOutput(losses={'ce': F.cross_entropy(logits, batch.targets)}, logits=logits)


class DistillObjective(Objective):
    """A student learning from a frozen teacher through one distillation method.

    The teacher is in eval mode whatever mode the objective is put in, has no gradients, and runs
    under ``no_grad``. A method whose modules must stay frozen in this stage (AB's connector, FT's
    paraphraser) keeps them in eval mode in its own ``train``.
    """

    def __init__(self, student, teacher, method, teacher_source=None):
        super().__init__()
        self.model = student
        self.teacher = teacher.eval().requires_grad_(False)
        self.method = method
        # Where the teacher's outputs come from: ``teacher_source(batch, request)``; by default one pass
        # of this objective's own; a pack of students (engine/pack.py) hands out one shared pass.
        self.teacher_source = teacher_source

    def trainable_modules(self):
        return [self.model, *self.method.trainable_modules()]

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_request(self):
        """What this objective reads of the teacher for each batch."""
        return self.method.teacher_request()

    def teacher_outputs(self, batch):
        """The teacher's outputs for the batch, as the method asked (computed once, without autograd)."""
        if self.teacher_source is not None:
            return self.teacher_source(batch, self.teacher_request())
        return run_teacher(self.teacher, batch, self.teacher_request())

    def step(self, batch, epoch):
        logits, losses = self.method.forward_train(self.model, batch, self.teacher_outputs(batch), epoch)
        added = self.method.added
        if added is not None and self.method.alpha and f'add_{added.name}' not in losses:
            raise KDZooError(f"--add {added.name}: {self.method.name} composes its loss without the -a slot "
                             f"(Distiller.ce_kd_terms), so nothing would be added; drop --add")
        return StepOutput(losses=losses, logits=logits)

    def predict(self, images):
        return self.method.predict(self.model, self.teacher, images)

    def validate(self, loader, device, precision):
        top1, top5, loss, extra = super().validate(loader, device, precision)
        return top1, top5, loss, {**extra, **self.method.epoch_values()}

    def checkpoint_extras(self):
        return self.method.checkpoint_extras()


class InitStageObjective(DistillObjective):
    """The first stage of AB, FT and FSP: only the method's init loss, over the modules it names.

    As in RepDistiller's ``init``, everything else (the rest of the student too) stays in eval mode.
    """

    def trainable_modules(self):
        return self.method.init_modules(self.model)

    def train(self, mode=True):
        super().train(False)
        for module in self.trainable_modules():
            module.train(mode)
        return self

    def teacher_request(self):
        return self.method.init_teacher_request()

    def step(self, batch, epoch):
        logits, loss = self.method.forward_init(self.model, batch, self.teacher_outputs(batch))
        return StepOutput(losses={'init': loss}, logits=logits)
