"""SRRL: Yang et al., "Knowledge Distillation via Softmax Regression Representation Learning" (ICLR 2021),
as the SimKD repo re-implements it (the code wins; the original code's loss weights are not used).

The student's pooled feature goes through a trained transfer (1x1 conv, BN, ReLU) to the teacher's width;
the loss is MSE to the teacher's pooled feature plus MSE between the teacher's logits and what the
teacher's frozen classifier makes of the transferred feature (gradients pass through that classifier).
The student keeps and trains its own classifier with CE and KD (``-c 1 -d 1 -b 1``) and predicts with it.
"""
from models.util import SRRL
from .base import Distiller
from .registry import register
from .teacher import Borrowed
from .FitNet import HintLoss
from .SimKD import teacher_classifier

__all__ = ['SRRLDistiller']


@register('srrl')
class SRRLDistiller(Distiller):
    """``models.util.SRRL`` on ``feats[-1]`` (the pooled features)."""
    needs_feats = True
    default_weights = (1.0, 1.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        s_n, t_n = probe_s.feats[-1].shape[1], probe_t.feats[-1].shape[1]
        classifier = teacher_classifier(teacher, t_n, 'SRRL')
        self.transfer = SRRL(s_n=s_n, t_n=t_n)
        self.criterion = HintLoss()
        self.classifier_t = Borrowed(classifier)  # the teacher's: never trained or saved here

    def method_loss(self, out_s, out_t, batch, epoch):
        trans_feat_s, pred_feat_s = self.transfer(out_s.feats[-1], self.classifier_t.module)
        return self.criterion(trans_feat_s, out_t.feats[-1]) + self.criterion(pred_feat_s, out_t.logits)
