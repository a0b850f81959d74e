"""SemCKD: Chen et al., "Cross-Layer Distillation with Semantic Calibration" (AAAI 2021), as in the SimKD repo.

Every student stage (``feats[1:-1]``) learns from every teacher stage through its own regressor, weighted
per sample by an attention over teacher stages computed from batch similarity matrices
(``models.util.SelfA``; ``-s/--soft`` divides the attention logits). Paper and code agree; from the code:
the query/key embeddings read B x B similarity matrices, so their width is the batch size and incomplete
last batches are dropped (``drop_last``); weights ``-c 1 -d 1 -b 400``. In a multi-process job B is each
process's share of ``--batch_size`` (the global batch), as the SimKD repo builds ``SelfA`` per GPU.
"""
import torch
import torch.nn as nn

from helper import distributed
from helper.errors import KDZooError
from helper.precision import at_least_fp32, full_precision
from models.util import SelfA
from .base import Distiller
from .flags import require
from .registry import register

__all__ = ['SemCKDLoss', 'SemCKDDistiller']


class SemCKDLoss(nn.Module):
    """The SimKD repo's ``SemCKDLoss()(s_value, f_target, weight)``: ``weight`` (B x n_s x n_t) times the
    per-sample mean squared error of each regressed student map ``s_value[i][j]`` to ``f_target[i][j]``,
    summed and divided by B * n_s (computed in fp32)."""

    @full_precision
    def forward(self, s_value, f_target, weight):
        bsz, num_stu, num_tea = weight.shape
        per_sample = torch.stack([torch.stack([
            ((at_least_fp32(s_value[i][j]) - at_least_fp32(f_target[i][j])) ** 2).reshape(bsz, -1).mean(1)
            for j in range(num_tea)], 1) for i in range(num_stu)], 1)
        return (weight * per_sample).sum() / (bsz * num_stu)


@register('semckd')
class SemCKDDistiller(Distiller):
    """``SelfA`` built for the batch each process trains on (not the 2-image probe) and ``SemCKDLoss``."""
    needs_feats = True
    default_weights = (1.0, 1.0, 400.0)

    @classmethod
    def defaults_for(cls, args):
        """-b 400 is the SimKD repo's (CIFAR-100, ImageNet). It weighs a squared error of raw feature maps, and
        on the built-in digits data (teachers' maps several times larger, 16-64 channels) it diverges at lr
        0.05, so there the default is 100; a toolbox choice, there being no published digits recipe."""
        cls.settings(args)
        return (1.0, 1.0, 100.0) if args.dataset == 'digits' else cls.default_weights

    @staticmethod
    def settings(args):
        require(args, positive=['soft'], shown={'soft': "-s/--soft (SemCKD's attention temperature)"})

    @classmethod
    def data_options(cls, args):
        return {'drop_last': True}

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        world_size = distributed.current().world_size
        per_process = args.batch_size // world_size  # the launcher has checked that it divides
        if per_process < 4:
            share = f" ({per_process} per process of {world_size})" if world_size > 1 else ''
            raise KDZooError(f"SemCKD needs batches of 4 or more images (its embeddings are batch size / 4 wide), "
                             f"got --batch_size {args.batch_size}{share}")
        s_n = [f.shape[1] for f in probe_s.feats[1:-1]]
        t_n = [f.shape[1] for f in probe_t.feats[1:-1]]
        self.attention = SelfA(per_process, s_n, t_n, args.soft)
        self.criterion = SemCKDLoss()

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('SemCKD')
        group.add_argument('-s', '--soft', type=float, default=1.0, help="SemCKD's attention temperature")

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(*self.attention(out_s.feats[1:-1], out_t.feats[1:-1]))
