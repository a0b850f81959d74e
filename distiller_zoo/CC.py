"""CC: Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019).

Paper vs code: the paper matches the batch's sample-correlation matrices under a Taylor-expanded
Gaussian kernel; RepDistiller runs the authors' cheaper surrogate, products of the per-sample
discrepancies |e_s - e_t| of consecutive samples in the batch. The code wins.
"""
import torch.nn as nn

from helper.errors import KDZooError
from helper.precision import at_least_fp32
from .base import Distiller
from .registry import register

__all__ = ['Correlation', 'LinearEmbed', 'CC']


class Correlation(nn.Module):
    """``Correlation()(f_s, f_t)``: with delta_i = |f_s_i - f_t_i|, the mean over i < B of
    <delta_i, delta_{i+1}>, so the batch order (the loader's shuffle) matters."""

    def forward(self, f_s, f_t):
        if f_s.shape != f_t.shape or f_s.dim() != 2:
            raise KDZooError(f"Correlation compares (batch, dim) embeddings of equal shape, got "
                             f"{tuple(f_s.shape)} and {tuple(f_t.shape)}; embed both to the same --feat_dim")
        if f_s.size(0) < 2:
            raise KDZooError("CC pairs consecutive samples and needs batches of at least 2; pick a --batch_size "
                             "that leaves no last batch of 1 sample")
        delta = (at_least_fp32(f_s) - at_least_fp32(f_t)).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean()


class LinearEmbed(nn.Module):
    """``LinearEmbed(dim_in=1024, dim_out=128)``: flatten, then a linear map (no normalisation)."""

    def __init__(self, dim_in=1024, dim_out=128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return self.linear(x.flatten(1))


@register('correlation')
class CC(Distiller):
    """RepDistiller's ``correlation``: f4 of both networks through LinearEmbed heads to --feat_dim,
    both heads trained with the student; ``-a 0 -b 0.02``."""
    needs_feats = True
    default_weights = (1.0, 0.0, 0.02)
    reads_flags = ('feat_dim',)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        if args.feat_dim < 1:
            raise KDZooError(f"--feat_dim must be at least 1, got {args.feat_dim}")
        if args.batch_size < 2 or data.num_train % args.batch_size == 1:
            raise KDZooError(f"CC pairs consecutive samples, so no batch may hold a single one, but --batch_size "
                             f"{args.batch_size} with {data.num_train} training images leaves one; pick another "
                             f"--batch_size")
        self.embed_s = LinearEmbed(probe_s.feats[-1].flatten(1).shape[1], args.feat_dim)
        self.embed_t = LinearEmbed(probe_t.feats[-1].flatten(1).shape[1], args.feat_dim)
        self.criterion = Correlation()

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(self.embed_s(out_s.feats[-1]), self.embed_t(out_t.feats[-1]))
