"""ITRD: Miles, Lopez-Rodriguez and Mikolajczyk, "Information Theoretic Representation Distillation" (BMVC 2022),
as the official code (roymiles/ITRD, ``distiller_zoo/IT.py``, ``helper/loops.py``, ``train_student.py``; the same
``ITLoss`` is copied unchanged into zkxufo/TTM, ``distiller_zoo/itrd.py``).

Both terms read the pooled penultimate features (``feats[-1]``) and share one trained ``nn.Linear(s_dim, t_dim)``
embedding of the student's:

* correlation: the embedded student features and the teacher's are standardised per dimension over the batch
  (mean, unbiased std), their per-dimension correlation c = sum_b s_b * t_b / B; the loss is
  log2(sum_d (|c_d - 1|^2)^alpha) with alpha = ``--alpha_it`` (Renyi's order). The embedding is applied always.
* mutual information: the L2-normalised rows give the Gram matrices G_s, G_t (B x B); with G_st = G_s * G_t
  (elementwise), each divided by its trace, the loss is sum(G_s^2 - G_st^2). Here the embedding is applied only
  when the two widths differ (the official ``if self.s_dim != self.t_dim``).

The method term is ``--lambda_corr`` * correlation + ``--lambda_mutual`` * mutual, weighted by ``-b``; no KD term
(``-a 0``). Defaults (-r 1 -a 0 -b 1, --lambda_corr 2, --lambda_mutual 1, --alpha_it 1.5): -r/-b and the
lambdas are the ITRD README's command (``-b 1.0 -r 1.0 --lambda_corr 2.0 --lambda_mutual 1.0``), the lambdas
and alpha also the defaults of zkxufo/TTM's ``train_student.py``, whose runs give the WTTM+ITRD rows; the ITRD
repo's own ``train_student.py`` defaults ``--lambda_mutual`` to 0.05, and its README command passes
``--alpha_it 1.01`` (its ``train_student.py`` and TTM's default 1.5). Neither repo publishes per-pair values or an
ImageNet script, so every pair and data set gets these.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller
from .flags import require
from .registry import register

__all__ = ['itrd_correlation', 'itrd_mutual', 'ITLoss', 'ITRD']


@full_precision
def itrd_correlation(f_s, f_t, alpha):
    """The official ``forward_correlation_it`` after the embedding: ``f_s`` (already embedded) and ``f_t`` are
    (B, D); log2 of the summed (|c - 1|^2)^alpha of the per-dimension batch correlations c."""
    n = f_s.shape[0]
    s_norm = (f_s - f_s.mean(0)) / f_s.std(0)
    t_norm = (f_t - f_t.mean(0)) / f_t.std(0)
    c = (s_norm * t_norm).sum(0) / n
    return torch.log2((c - 1).abs().pow(2.0).pow(alpha).sum())


@full_precision
def itrd_mutual(f_s, f_t):
    """The official ``forward_mutual_it`` after the (optional) embedding: sum(G_s^2 - G_st^2) of the trace-normalised
    Gram matrices of the L2-normalised rows, G_st = G_s * G_t elementwise."""
    s_norm, t_norm = F.normalize(f_s), F.normalize(f_t)
    gram_s = s_norm @ s_norm.t()
    gram_st = gram_s * (t_norm @ t_norm.t())
    gram_s = gram_s / torch.trace(gram_s)
    gram_st = gram_st / torch.trace(gram_st)
    return (gram_s.pow(2) - gram_st.pow(2)).sum()


class ITLoss(nn.Module):
    """The official criterion: ``embed`` (a Linear from the student's pooled width to the teacher's) and the two
    terms under the official method names."""

    def __init__(self, s_dim, t_dim, alpha_it):
        super().__init__()
        self.s_dim, self.t_dim, self.alpha_it = s_dim, t_dim, alpha_it
        self.embed = nn.Linear(s_dim, t_dim)

    def forward_correlation_it(self, z_s, z_t):
        return itrd_correlation(self.embed(z_s.flatten(1)), z_t, self.alpha_it)

    def forward_mutual_it(self, z_s, z_t):
        if self.s_dim != self.t_dim:
            z_s = self.embed(z_s.flatten(1))
        return itrd_mutual(z_s, z_t)


@register('itrd')
class ITRD(Distiller):
    """gamma * CE + alpha * KD + beta * (--lambda_corr * correlation + --lambda_mutual * mutual) on ``feats[-1]``."""
    needs_feats = True
    default_weights = (1.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.criterion = ITLoss(probe_s.feats[-1].flatten(1).shape[1], probe_t.feats[-1].flatten(1).shape[1],
                                args.alpha_it)
        self.lambda_corr, self.lambda_mutual = args.lambda_corr, args.lambda_mutual

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('ITRD')
        group.add_argument('--lambda_corr', type=float, default=2.0,
                           help='weight of the correlation term (2: roymiles/ITRD and zkxufo/TTM)')
        group.add_argument('--lambda_mutual', type=float, default=1.0,
                           help='weight of the mutual-information term (1: the ITRD README command and zkxufo/TTM; '
                                "the ITRD repo's train_student.py default is 0.05)")
        group.add_argument('--alpha_it', type=float, default=1.5,
                           help="Renyi's order alpha of the correlation term (1.5: both repos' train_student.py; "
                                'the ITRD README command passes 1.01)')

    @staticmethod
    def settings(args):
        require(args, positive=['alpha_it'], non_negative=['lambda_corr', 'lambda_mutual'])
        # The correlation term divides by each dimension's unbiased std over the batch: a batch of one is NaN.
        if (getattr(args, 'batch_size', None) or 2) < 2:
            raise KDZooError(f"itrd standardises features over the batch, so --batch_size must be at least 2, "
                             f"got {args.batch_size}")

    def method_loss(self, out_s, out_t, batch, epoch):
        f_s, f_t = out_s.feats[-1], out_t.feats[-1]
        loss = self.lambda_corr * self.criterion.forward_correlation_it(f_s, f_t)
        return loss + self.lambda_mutual * self.criterion.forward_mutual_it(f_s, f_t)
