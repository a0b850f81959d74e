"""FT: Kim, Park and Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer"
(NeurIPS 2018), as RepDistiller runs it.

Init stage (--init_epochs): a paraphraser (conv auto-encoder, rate k = 0.5) learns to reconstruct the
teacher's last feature map (MSE). Main stage: the paraphraser is frozen in eval mode and its encoder gives
the teacher factor; a translator, trained with the student, maps the student's last map to the student
factor; the loss is ``FactorTransfer``. RepDistiller's factor is the L2-normalised spatial mean over channels
of the squared factor map, not the paper's normalised whole factor; the code wins.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.precision import at_least_fp32
from models.util import Paraphraser, Translator
from .base import Distiller
from .registry import register
from .two_stage import TwoStage

__all__ = ['FactorTransfer', 'Paraphraser', 'Translator', 'FT']


class FactorTransfer(nn.Module):
    """RepDistiller's ``FactorTransfer(p1, p2)(f_s, f_t)``.

    factor(f) = normalize(mean over channels of f^p1, flattened per sample); the loss is
    mean |factor(f_s) - factor(f_t)| for p2 = 1, else mean (factor(f_s) - factor(f_t))^p2. The taller map
    is average-pooled to the other's size first.
    """

    def __init__(self, p1=2, p2=1):
        super().__init__()
        self.p1 = p1
        self.p2 = p2

    def forward(self, f_s, f_t):
        f_s, f_t = at_least_fp32(f_s), at_least_fp32(f_t)
        if f_s.shape[2] > f_t.shape[2]:
            f_s = F.adaptive_avg_pool2d(f_s, f_t.shape[2:])
        elif f_s.shape[2] < f_t.shape[2]:
            f_t = F.adaptive_avg_pool2d(f_t, f_s.shape[2:])
        diff = self.factor(f_s) - self.factor(f_t)
        return diff.abs().mean() if self.p2 == 1 else diff.pow(self.p2).mean()

    def factor(self, f):
        return F.normalize(f.pow(self.p1).mean(1).flatten(1))


@register('factor')
class FT(TwoStage, Distiller):
    """Two stages, modules and modes as RepDistiller's train_student.py, helper/pretrain.py and loops.py."""
    needs_feats = True
    default_weights = (1.0, 0.0, 200.0)
    init_stage_only = ('paraphraser',)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        s_shape, t_shape = probe_s.feats[-2].shape, probe_t.feats[-2].shape
        self.paraphraser = Paraphraser(t_shape)
        self.translator = Translator(s_shape, t_shape)
        self.criterion = FactorTransfer()

    def method_loss(self, out_s, out_t, batch, epoch):
        factor_s = self.translator(out_s.feats[-2])
        with torch.no_grad():  # frozen: no graph into the paraphraser, which the optimiser does not hold
            factor_t = self.paraphraser(out_t.feats[-2], is_factor=True)
        return self.criterion(factor_s, factor_t)

    def init_modules(self, student):
        return [self.paraphraser]

    def init_learning_rate(self, args):
        """0.01 for the CIFAR ResNet and WRN students, as RepDistiller hard-codes, else --learning_rate.

        Deviation: a --learning_rate below 0.01 also lowers the former, so that the advice given when the
        paraphraser diverges (it has no BN, so large teacher maps can blow it up) works; RepDistiller's
        recipes (0.05 for these students) are unaffected.
        """
        cifar_resnet_or_wrn = args.model_s.startswith(('resnet', 'wrn_')) and args.dataset != 'imagenet'
        return min(0.01, args.learning_rate) if cifar_resnet_or_wrn else args.learning_rate

    def init_loss(self, out_s, out_t, batch):
        f_t = out_t.feats[-2]
        _, reconstruction = self.paraphraser(f_t)
        return F.mse_loss(at_least_fp32(reconstruction), at_least_fp32(f_t))
