"""Any registered online method (online/) as an Objective of the shared training loop.

The method owns its networks, its step, its validation and its exports (online/base.py's contract); this
adapter hands the loop's calls to it, and hands it what it needs of the engine: ``evaluate_predictions``, the
evaluation of one network, for the default validation. ``model`` is the method's, so the checkpoints' ``model``
and resume entries are the method's own (``resume_state``), not prefixed by this wrapper.
"""
from engine.loop import evaluate_predictions
from engine.objective import Objective, StepOutput


class OnlineObjective(Objective):
    def __init__(self, method):
        super().__init__()
        self.method = method

    @property
    def model(self):
        return self.method.model

    def trainable_modules(self):
        return self.method.trainable_modules()

    def step(self, batch, epoch):
        logits, losses = self.method.step(batch, epoch)
        return StepOutput(losses=losses, logits=logits)

    def predict(self, images):
        return self.method.predict(images)

    def checkpoint_extras(self):
        return self.method.checkpoint_extras()

    def validate(self, loader, device, precision):
        return self.method.validate(loader, device, precision, evaluate_predictions)

    def after_step(self, batch, epoch, step, lr):
        self.method.after_step(batch, epoch, step, lr)

    def after_epoch(self, state, files):
        self.method.after_epoch(state, files)

    def resume_state(self):
        return self.method.resume_state()

    def load_resume_state(self, model_state, extra_state):
        self.method.load_resume_state(model_state, extra_state)
