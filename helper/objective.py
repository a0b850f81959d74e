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

from .errors import CheckpointError


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

    def resume_state(self):
        """Everything besides ``model`` that an exact resume needs (projectors, memory banks)."""
        skip = ('model.',) + self.rebuilt_prefixes
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def load_resume_state(self, model_state, extra_state):
        expected = set(self.resume_state())
        if set(extra_state) != expected:
            raise CheckpointError("the resume checkpoint was written by a different method or settings "
                                  "(its auxiliary modules differ); resume with the original command")
        try:
            self.model.load_state_dict(model_state, strict=True)
        except RuntimeError:
            raise CheckpointError("the resume checkpoint holds another architecture's weights; resume "
                                  "with the command that started the run") from None
        self.load_state_dict({**{'model.' + k: v for k, v in model_state.items()}, **extra_state},
                             strict=False)


class SupervisedObjective(Objective):
    """Cross-entropy on the labels: teacher and baseline training."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def step(self, batch, epoch):
        logits = self.model(batch.images)
        return StepOutput(losses={'ce': F.cross_entropy(logits, batch.targets)}, logits=logits)
