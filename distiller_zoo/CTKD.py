"""CTKD: Li et al., "Curriculum Temperature for Knowledge Distillation" (AAAI 2023), as the official code
(zhengli97/CTKD: models/temp_global.py, train_student.py, helper/loops.py) runs it with KD.

The KD temperature is learned. ``GlobalTemperature`` (the official ``Global_T``) holds one parameter g, 1 at
the start, and the term's temperature is

    T = t_start + t_end * sigmoid(GRL(g, lambda)),

1 + 20 sigmoid(g) with the defaults (T 15.62 at the start, always inside (1, 21)). The gradient reversal layer
is the identity forward and multiplies the gradient by lambda backward; it has no minus sign of its own:
the curriculum's lambda is negative (0 -> decay_min -1), and that flips the gradient, so g climbs the KD loss
the student descends, ever harder as |lambda| grows. lambda is set once per epoch e (1-based), as the
official loop does:
  * --cosine_decay 1 (``CosineDecay``): decay_min + (decay_max - decay_min) (1 + cos(pi i / decay_loops)) / 2,
    i = min(e, decay_loops): from decay_max towards decay_min, reached at epoch decay_loops;
  * --cosine_decay 0 (``LinearDecay``): -i (decay_max - decay_min) / decay_loops, i = min(e, decay_loops - 1).
    As in the official code, decay_max is not its starting value (only the span counts), and the last value
    is -(decay_loops - 1) / decay_loops of the span, never decay_min.
The temperature module is trained by the run's one SGD, with the student's lr, momentum and weight decay
(the official ``trainable_list``), saved in every resume checkpoint and restored by --resume.

Loss: gamma * CE + alpha * KD at T (T^2 * KL, batch mean), the official ``-r -a -b`` with ``--distill kd``
(-b has no term). Defaults from the official scripts: CIFAR-100 (scripts/run_cifar_distill.sh) -r 0.1 -a 0.9
-b 0, --have_mlp 1 --mlp_name global --t_start 1 --t_end 20 --cosine_decay 1 --decay_max 0 --decay_min -1
--decay_loops 10; ImageNet (scripts/run_imagenet_distill.sh) -r 1 -a 1 -b 0, --decay_loops 5. (train_student.py's
own argparse defaults, --have_mlp 0 --decay_min 0 --decay_loops 0, are not what any script runs.) --have_mlp 0
is the official fixed temperature: KD at --kd_T, no module. --mlp_name instance is refused: the instance-wise
module is not in the official repository (its README links it on cloud drives and gives only the per-sample KL).

With --logit_stand (LS, ``logit_stand.py``) both logits are z-scored before the softmax at T and -a not given
becomes LS's --kd-weight 9, as LS's CTKD/ runs (its scripts/run_cifar_distill.sh: -r 0.1 -a 9). LS's
CTKD/train_student.py picks the plain KL when its --logit_stand is given and the standardised one when it is
not, and its script gives none: its CTKD + LS runs are standardised, which is what --logit_stand does here.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from .base import Distiller, kd_loss
from .flags import require
from .logit_stand import LogitStand
from .registry import register

__all__ = ['GradientReversal', 'GlobalTemperature', 'curriculum_lambda', 'CTKD']


class GradientReversal(torch.autograd.Function):
    """The official ``GradientReversalFunction``: the identity forward, the gradient times lambda backward
    (the minus sign is in lambda)."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grads):
        return grads.new_tensor(ctx.lambda_) * grads, None


class GlobalTemperature(nn.Module):
    """The official ``Global_T``: one learnable scalar, 1 at the start, read through the reversal layer."""

    def __init__(self):
        super().__init__()
        self.global_T = nn.Parameter(torch.ones(1))

    def forward(self, lambda_):
        return GradientReversal.apply(self.global_T, lambda_)


def curriculum_lambda(epoch, decay_max, decay_min, decay_loops, cosine=True):
    """The official ``CosineDecay``/``LinearDecay`` ``get_value(epoch)``: the lambda of the 1-based ``epoch``."""
    i = max(epoch, 0)
    if cosine:
        i = min(i, decay_loops)
        return (math.cos(i * math.pi / decay_loops) + 1.0) * 0.5 * (decay_max - decay_min) + decay_min
    if i >= decay_loops:
        i = decay_loops - 1
    return i * -((decay_max - decay_min) / decay_loops)


@register('ctkd')
class CTKD(LogitStand, Distiller):
    """gamma * CE + alpha * T^2 KL at the learned temperature T = t_start + t_end * sigmoid(GRL(g, lambda_epoch)).

    Defaults are the official scripts': -r 0.1 -a 0.9 -b 0 (ImageNet 1 1 0), a global temperature in (1, 21),
    lambda from 0 to -1 by a cosine over 10 epochs (ImageNet 5). The values used are written back into args.
    """
    default_weights = (0.1, 0.9, 0.0)
    imagenet_weights = (1.0, 1.0, 0.0)
    ls_temperatures, ls_weights = ('kd_T',), ('alpha',)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.t_start, self.t_end = args.t_start, args.t_end
        self.decay = dict(decay_max=args.decay_max, decay_min=args.decay_min, decay_loops=args.decay_loops,
                          cosine=bool(args.cosine_decay))
        self.temperature = GlobalTemperature() if args.have_mlp else None

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('CTKD (its official flags; defaults from its scripts)')
        group.add_argument('--have_mlp', type=int, choices=(0, 1), default=1,
                           help='1: learn the temperature (default); 0: KD at --kd_T, no temperature module')
        group.add_argument('--mlp_name', choices=('global', 'instance'), default='global',
                           help="'global': one learnable temperature (the official Global_T); 'instance' is "
                                "refused, its module is not in the official code")
        group.add_argument('--t_start', type=float, default=1.0, help='lowest temperature (1)')
        group.add_argument('--t_end', type=float, default=20.0,
                           help='span of the temperature: T = t_start + t_end * sigmoid(g) (20)')
        group.add_argument('--cosine_decay', type=int, choices=(0, 1), default=1,
                           help="1: lambda follows the official CosineDecay (default); 0: its LinearDecay")
        group.add_argument('--decay_max', type=float, default=0.0, help="the curriculum's first lambda (0)")
        group.add_argument('--decay_min', type=float, default=-1.0,
                           help="the curriculum's last lambda (-1; negative reverses the temperature's gradient)")
        group.add_argument('--decay_loops', type=float, default=None,
                           help='epochs over which lambda goes from --decay_max to --decay_min (10; ImageNet 5)')

    @staticmethod
    def settings(args):
        """Fill --decay_loops for the data set; refuse the instance-wise module and impossible ranges."""
        if args.decay_loops is None:
            args.decay_loops = 5.0 if args.dataset == 'imagenet' else 10.0
        if not args.have_mlp:
            return
        if args.mlp_name == 'instance':
            raise KDZooError("--mlp_name instance: CTKD's instance-wise temperature module is not in its official "
                             "code (only on cloud drives), so it is not offered; use --mlp_name global")
        low, high = sorted((args.t_start, args.t_start + args.t_end))
        if low <= 0:
            raise KDZooError(f"CTKD's temperature t_start + t_end * sigmoid(g) spans ({low:g}, {high:g}) with "
                             f"--t_start {args.t_start:g} --t_end {args.t_end:g}; both ends must be positive")
        require(args, positive=['decay_loops'])

    def curriculum(self, epoch):
        """lambda of the 1-based epoch."""
        return curriculum_lambda(epoch, **self.decay)

    def temperature_at(self, epoch):
        """The KD temperature of a step in ``epoch``: a 0-d tensor through the reversal layer (the learned
        one), or --kd_T."""
        if self.temperature is None:
            return self.kd_T
        g = self.temperature(self.curriculum(epoch))
        return (self.t_start + self.t_end * torch.sigmoid(g)).reshape(())

    def losses(self, out_s, out_t, batch, epoch):
        terms = {'ce': self.gamma * F.cross_entropy(out_s.logits, batch.targets)}
        if self.alpha:
            terms['kd'] = self.alpha * kd_loss(self.standardized(out_s.logits), self.standardized(out_t.logits),
                                               self.temperature_at(epoch))
        return terms

    def epoch_values(self):
        if self.temperature is None:
            return {}
        with torch.no_grad():
            return {'ctkd_T': float(self.t_start + self.t_end * torch.sigmoid(self.temperature.global_T))}
