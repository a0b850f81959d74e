"""PKT: Passalis and Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer"
(ECCV 2018), on the pooled features ``feats[-1]``.

RepDistiller uses the authors' cosine-kernel form (the code wins over the paper's kernel choices).
"""
import torch
import torch.nn as nn

from helper.precision import full_precision
from .base import Distiller
from .registry import register

__all__ = ['PKT', 'PKTDistiller']


class PKT(nn.Module):
    """RepDistiller's PKT loss: ``PKT()(f_s, f_t)`` on (B, D) embeddings.

    Cosine similarities mapped to [0, 1] by (K + 1) / 2 are turned into row-wise conditional distributions;
    the loss is mean_ij P_t log((P_t + eps) / (P_s + eps)), eps = 1e-7, the mean over all B^2 entries.
    Norms are torch's vector norms: the same values, and a finite gradient where RepDistiller's square
    root gives NaN (an all-zero embedding).
    """

    @full_precision
    def forward(self, f_s, f_t):
        return self.cosine_similarity_loss(f_s, f_t)

    @staticmethod
    def cosine_similarity_loss(output_net, target_net, eps=0.0000001):
        def conditional(x):
            x = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)
            x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
            kernel = (x @ x.t() + 1.0) / 2.0
            return kernel / kernel.sum(dim=1, keepdim=True)

        p_s, p_t = conditional(output_net), conditional(target_net)
        return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


@register('pkt')
class PKTDistiller(Distiller):
    """Probabilistic knowledge transfer between the pooled features ``feats[-1]``."""
    needs_feats = True
    default_weights = (1.0, 0.0, 30000.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.criterion = PKT()

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.feats[-1], out_t.feats[-1])
