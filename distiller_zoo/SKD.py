"""SKD: Jeong, Lee and Choi, "Streamlined Knowledge Distillation" (CVPR 2026), loss as torchdistill's
``SKDInstanceLoss`` and ``SKDDirectionLoss`` (yoshitomo-matsubara/torchdistill, ``torchdistill/losses/
mid_level.py``), the official code this toolbox follows.

Two terms on the logits alone:

  instance   KL(softmax(z_t / T) || softmax(z_s / T)), summed over classes and averaged over the batch,
             with no T^2 factor (unlike Hinton's KD, ``kd``);
  direction  with G = Z Z^T the B x B Gram matrix of the L2-normalised logit rows (the cosines between the
             batch's samples), D = G_s - G_t, Sigma the unbiased covariance of D's columns over its rows
             (``torch.cov(D.t())``) and Sigma' = Sigma + lambda I (Tikhonov), the mean over rows i of the
             Mahalanobis length sqrt(D_i Sigma'^-1 D_i^T). Gradients flow through Sigma' too, as in the code.

Defaults: torchdistill's SKD config ``configs/sample/ilsvrc2012/skd/resnet18_from_resnet34.yaml`` (ImageNet,
its only one; no CIFAR-100 config, so the same on every data set): instance weight 1 at temperature 4,
direction weight 1 with Tikhonov 0.1, and no cross-entropy term at all. So ``-r 0 -a 0 -b 1``,
--skd_instance 1, --skd_direction 1, --skd_T 4, --skd_tikhonov 0.1. torchdistill's docstrings say the paper
gives no value for T or lambda and that the paper's public code uses 4 and 0.1.

When student and teacher Gram matrices agree on a row, that row's distance is 0 and the official square
root's gradient there is NaN; so it is here (identical logits give the loss 0 with NaN gradients). A batch
of one (a short last batch) has no covariance: the official code's direction term is NaN there, this one's 0.
"""
import torch
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller
from .flags import require
from .registry import register

__all__ = ['skd_instance_loss', 'skd_direction_loss', 'SKDDistiller']

SOURCE = 'torchdistill configs/sample/ilsvrc2012/skd/resnet18_from_resnet34.yaml'


@full_precision
def skd_instance_loss(z_s, z_t, temperature):
    """Batch-mean KL(softmax(z_t / T) || softmax(z_s / T)), without KD's T^2."""
    log_p_s = (z_s / temperature).log_softmax(dim=1)
    log_p_t = (z_t / temperature).log_softmax(dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum() / z_s.shape[0]


@full_precision
def skd_direction_loss(z_s, z_t, tikhonov):
    """Mean Mahalanobis length of the rows of D = G_s - G_t under the Tikhonov-regularised covariance of D;
    0 for a batch of one, which has no covariance (the official code gives NaN)."""
    if z_s.shape[0] < 2:
        return (z_s * 0).sum()
    u_s, u_t = F.normalize(z_s, dim=1), F.normalize(z_t, dim=1)
    diff = u_s @ u_s.t() - u_t @ u_t.t()
    centred = diff - diff.mean(dim=0, keepdim=True)  # D's columns are the variables, its rows the observations
    cov = centred.t() @ centred / (diff.shape[0] - 1)
    precision = torch.cholesky_inverse(torch.linalg.cholesky(cov + tikhonov * torch.eye(len(cov), dtype=cov.dtype,
                                                                                           device=cov.device)))
    return ((diff @ precision) * diff).sum(dim=1).sqrt().mean()


@register('skd')
class SKDDistiller(Distiller):
    """beta * (--skd_instance * instance + --skd_direction * direction), with gamma * CE + alpha * KD as
    ever; defaults -r 0 -a 0 -b 1 (torchdistill's SKD config trains on the two SKD terms alone)."""
    default_weights = (0.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.instance_weight, self.direction_weight = args.skd_instance, args.skd_direction
        self.temperature, self.tikhonov = args.skd_T, args.skd_tikhonov

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group(f'SKD (defaults: {SOURCE})')
        group.add_argument('--skd_instance', type=float, default=1.0, help='weight of the instance (KL) term')
        group.add_argument('--skd_direction', type=float, default=1.0,
                           help='weight of the direction (Mahalanobis) term')
        group.add_argument('--skd_T', type=float, default=4.0, help='temperature of the instance term')
        group.add_argument('--skd_tikhonov', type=float, default=0.1,
                           help="Tikhonov factor added to the direction term's covariance")

    @staticmethod
    def settings(args):
        """Refuse values that leave the loss undefined."""
        require(args, positive=['skd_T', 'skd_tikhonov'], non_negative=['skd_instance', 'skd_direction'])
        if args.batch_size == 1:
            raise KDZooError("SKD's direction term takes a covariance over the batch, so it needs --batch_size 2 "
                             "or more")

    def method_loss(self, out_s, out_t, batch, epoch):
        z_s, z_t = out_s.logits, out_t.logits
        loss = z_s.new_zeros((), dtype=torch.promote_types(z_s.dtype, torch.float32))
        if self.instance_weight:
            loss = loss + self.instance_weight * skd_instance_loss(z_s, z_t, self.temperature)
        if self.direction_weight:
            loss = loss + self.direction_weight * skd_direction_loss(z_s, z_t, self.tikhonov)
        return loss
