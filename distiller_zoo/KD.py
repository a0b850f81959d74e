"""KD: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015)."""
import torch.nn as nn

from .base import Distiller, kd_loss
from .registry import register

__all__ = ['DistillKL', 'KD']


class DistillKL(nn.Module):
    """RepDistiller's KD criterion: ``DistillKL(T)(y_s, y_t)``, KL divergence of the softened outputs
    times T^2 (which keeps the gradient size independent of T), averaged over the batch."""

    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, y_s, y_t):
        return kd_loss(y_s, y_t, self.T)


@register('kd')
class KD(Distiller):
    """Logits only: the KL term lives in the alpha slot, as in RepDistiller (``-r 0.1 -a 0.9 -b 0``)."""
    default_weights = (0.1, 0.9, 0.0)

    def method_loss(self, out_s, out_t, batch, epoch):
        return out_s.logits.new_zeros(())
