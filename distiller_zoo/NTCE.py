"""NTCE-KD (Li et al., Sensors 2024): MKL plus diversity-based augmentation, a weak and a strong view of
every image with the student and the teacher run on both (the reference code with ``NTCE.ISAUG True``).

What this implements is what the paper describes, which differs from the released code in two places:
- the released ``forward_train`` unpacks three values from ``shrink_margin``'s two on the strong-view
  path, so ``ISAUG True`` crashes before its first step; here the strong view simply goes through MKL;
- it then combines the MKL terms as ``(sum(weak) + sum(strong)) / 2 * len(factors)``, multiplying by the
  number of factors; here MKL is averaged over factors and views, ``(sum(weak) + sum(strong)) / (2 *
  len(factors))``, as CE is averaged over the two views.
The reference's ``ISAUG`` switch also doubles the epochs and the lr decay stages and halves the weight
decay (tools/train.py); here that budget is spelled out on the command line (scripts/run_ntce_tables.sh,
scripts/run_imagenet_tables.sh).

The strong view is the data's (``Batch.images_strong``): on CIFAR-100 and digits a second crop and flip of
the in-memory images, on ImageNet folders a second random-resized crop and flip (PIL workers or DALI), each
then through the reference's two random operations and Cutout on the device (dataset/strong_augment.py).
"""
from models.features import NetOutput
from .MKL import MKL, mkl_loss
from .registry import register

__all__ = ['NTCE']


@register('ntce')
class NTCE(MKL):
    """MKL's loss averaged over the weak view (``batch.images``) and the strong one (``batch.view('strong')``):
    the student runs on both (``run_student``); the teacher's outputs on both come from the engine
    (``views``). ``losses`` stays the one place the terms are composed, so ``ntce++`` adds ND to it."""
    views = ('strong',)

    def run_student(self, student, batch):
        out_s = super().run_student(student, batch)
        out_s.views['strong'] = NetOutput(student(batch.view('strong')))
        return out_s

    def losses(self, out_s, out_t, batch, epoch):
        pairs = [(out_s.logits, out_t.logits), (out_s.views['strong'].logits, out_t.views['strong'].logits)]
        weak, strong = (self.ce_kd_terms(s, t, batch.targets, batch, epoch) for s, t in pairs)
        terms = {key: (weak[key] + strong[key]) / 2 for key in weak}
        if self.beta:
            terms[self.name] = self.ramp(epoch) * self.beta * sum(
                mkl_loss(s, t, batch.targets, self.factors, self.temperature) for s, t in pairs) / 2
        return terms
