"""CRD: Tian, Krishnan and Isola, "Contrastive Representation Distillation" (ICLR 2020).

The penultimate features (f4) of both networks go through trained ``Embed`` heads to --feat_dim;
each student embedding must pick out its teacher embedding among --nce_k stored embeddings of
other classes, and vice versa (crd/criterion.py, crd/memory.py). The data side (--mode, the
negatives of batch.contrast_idx) is dataset/contrast.py. CRD+KD is ``-a 1``.
"""
import argparse

from crd.criterion import CRDLoss
from dataset.batches import ContrastSpec
from .base import Distiller
from .registry import register

__all__ = ['CRDLoss', 'CRD']

# The CRD group (CRD.add_arguments), read by crd and norm_crd (CC reads --feat_dim)
CRD_FLAGS = ('feat_dim', 'mode', 'nce_k', 'nce_t', 'nce_m', 'crd_bank')


class ContrastiveTerm:
    """Mixin of the methods with a CRD term (``crd``; ``norm_crd`` on NORM): the loaders' contrast rows
    (``batch.indices``, ``batch.contrast_idx``) on top of what the base asks for, and ``self.criterion``, a
    ``CRDLoss`` on the two networks' pooled features, RepDistiller's ``opt`` filled from the probes."""
    reads_flags = CRD_FLAGS  # for norm_crd, which does not inherit CRD.add_arguments

    @classmethod
    def data_options(cls, args):
        return dict(super().data_options(args), train_sample=ContrastSpec(args.nce_k, args.mode))

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        opt = argparse.Namespace(**vars(args))
        opt.s_dim = probe_s.feats[-1].flatten(1).shape[1]
        opt.t_dim = probe_t.feats[-1].flatten(1).shape[1]
        opt.n_data = data.num_train
        self.criterion = CRDLoss(opt)


@register('crd')
class CRD(ContrastiveTerm, Distiller):
    """RepDistiller's ``crd``: ``-a 0 -b 0.8``; the memory banks and the Z constants are buffers of
    ``criterion.contrast``, so resume restores them."""
    needs_feats = True
    default_weights = (1.0, 0.0, 0.8)

    @classmethod
    def add_arguments(cls, parser):
        """CRD's flags; NORM+CRD and CC (--feat_dim) read them too."""
        group = parser.add_argument_group('CRD')
        group.add_argument('--feat_dim', type=int, default=128, help='embedding width')
        group.add_argument('--mode', choices=('exact', 'relax'), default='exact', help='positive sampling')
        group.add_argument('--nce_k', type=int, default=16384, help='negatives per anchor')
        group.add_argument('--nce_t', type=float, default=0.07, help='temperature')
        group.add_argument('--nce_m', type=float, default=0.5, help='memory momentum')
        group.add_argument('--crd_bank', choices=('fp32', 'fp16', 'bf16'), default='fp32',
                           help='dtype of the two memory banks (half halves their memory; see docs/methods.md)')

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.feats[-1], out_t.feats[-1], batch.indices, batch.contrast_idx)

