"""Two-stage methods (AB, FT, FSP, SSKD): some modules are trained first, alone, for --init_epochs
(RepDistiller's helper/pretrain.py; SSKD's teacher head), then the main stage trains the student.

A method takes the stage by taking the mixin, first among its bases: ``class AB(TwoStage, Distiller)``, and
writes ``init_modules`` (what the first stage trains) and ``init_loss``. The engine asks every method the
same one question, ``init_modules(student)``: ``Distiller`` answers [] (no first stage), a ``TwoStage`` the
modules it trains; the engine's first stage (engine/student.py ``init_stage_trainer``, engine/objective.py
``InitStageObjective``) then reads the rest of this mixin.
"""
from models.features import run_network
from .teacher import TeacherRequest


class TwoStage:
    """The first stage of a method: its modules, loss, learning rate, teacher request and step.

    ``init_stage_only`` names the modules (children of the method) trained only in that stage, AB's
    connector, FT's paraphraser, SSKD's teacher head: the main stage keeps them in eval mode and out of its
    optimiser.
    """
    init_epochs = 30  # the default of --init_epochs (RepDistiller's; SSKD's teacher stage is 60)
    init_stage_only = ()
    reads_flags = ('init_epochs',)

    def init_modules(self, student):
        """The modules the first stage trains (the student's feature modules, the method's own)."""
        raise NotImplementedError

    def init_loss(self, out_s, out_t, batch):
        raise NotImplementedError

    def init_learning_rate(self, args):
        """Constant lr of the init stage (RepDistiller's helper/pretrain.py uses --learning_rate)."""
        return args.learning_rate

    def init_lr_at(self, args, epoch):
        """The init stage's lr at a (1-based) epoch of it: constant unless a method schedules it (SSKD)."""
        return self.init_learning_rate(args)

    def init_teacher_request(self):
        """What the teacher computes for a batch of the init stage (its features)."""
        return TeacherRequest(True, self.teacher_request().preact)

    def forward_init(self, student, batch, out_t):
        """One init-stage step's ``(logits, loss)``, as ``forward_train`` for the main stage: by default the
        student's features and ``init_loss``; SSKD's stage trains a teacher-side head and runs no student."""
        out_s = run_network(student, batch.images, True, self.preact)
        return out_s.logits, self.init_loss(out_s, out_t, batch)

    def trainable_modules(self):
        """The main stage's: the method's children but those of ``init_stage_only`` (that have parameters)."""
        if not self.init_stage_only:
            return super().trainable_modules()
        modules = [m for name, m in self.named_children() if name not in self.init_stage_only]
        return [m for m in modules if any(p.requires_grad for p in m.parameters())]

    def train(self, mode=True):
        super().train(mode)
        for name in self.init_stage_only:
            getattr(self, name).eval()  # InitStageObjective switches it on in its own stage
        return self
