"""SSKD: Xu, Liu, Li and Loy, "Knowledge Distillation Meets Self-Supervision" (ECCV 2020), as its official
code (xuguodong03/SSKD: student.py, teacher.py, wrapper.py, cifar.py) runs it.

Every image comes with its rotations by 90, 180 and 270 degrees; both networks run on the four views as one
batch of 4B. A self-supervision (SS) head, Linear-ReLU-Linear of the pooled feature's width (the official
``wrapper.proj_head``), sits on each network. The task: match each rotated view to its own un-rotated image
among the batch's B, by the cosine similarity of the heads' outputs (a 3B x B matrix).

Two stages, as student.py:
  1. (``--init_epochs``, 60; the official ``--t-epoch``) the teacher's SS head alone learns the task on the
     frozen teacher (eval mode, no gradient into the backbone): cross-entropy over the raw cosine
     similarities, SGD lr ``--t_lr`` 0.05 times 0.1 after epochs 30 and 45 (``--t_milestones``);
  2. the student (with its own SS head, trained with it) minimises
       gamma * CE(un-rotated) + alpha * KD(un-rotated, kd_T) + tf_weight * KD(rotated views, tf_T)
       + beta * KL(teacher's similarities || student's, ss_T),
     with the official weights 0.1, 0.9, 2.7, 10 and temperatures 4, 4, 0.5. The rotated-view KD keeps every
     view the teacher classifies right and the ``--ratio_tf`` (1.0) share of the wrong ones it ranks the
     true class highest in; the SS term likewise keeps the rows the teacher's head matches right and the
     ``--ratio_ss`` (0.75) share of the rest ("error level ranking"). Each KL is averaged over its kept rows
     and multiplied by T^2.
The deployed network is the plain student; the heads are training aids (kept in the resume checkpoint).

Differences from the official code:
  * the rotations are made on the device from the loader's batch (torch.rot90), so the four views share one
    crop (the official loader crops each rotated copy separately; it flips before rotating, as here);
  * ties in the error ranking: a view counts as right when no class (image) scores strictly higher than
    the true one, and the wrong views kept are the lowest-ranked ones, earlier rows first on equal rank
    (the official ``argsort`` breaks ties arbitrarily);
  * a term with no row kept is 0 (the official batch mean over no rows would be NaN);
  * in a multi-process job each process compares its own share of the batch (the similarity matrices and
    the kept-row counts are per process, as torchdistill's SSKD under DDP); one process is the official.
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from dataset.batches import VIEWS, rotated_views  # noqa: F401  (rotated_views: part of this module's API)
from models.features import NetOutput
from .base import Distiller
from .flags import require
from .registry import register
from .teacher import TeacherRequest
from .two_stage import TwoStage

__all__ = ['SSKD', 'SSHead', 'rotated_views', 'kept_rows', 'selected_kd', 'view_similarity']


# The official scripts' spellings (student.py) of flags kdzoo names otherwise.
_SSKD_FLAGS = {'--ce-weight': '-r', '--kd-weight': '-a', '--ss-weight': '-b', '--kd-T': '--kd_T',
               '--t-epoch': '--init_epochs', '--s-arch': '--model_s', '--epoch': '--epochs',
               '--lr': '--learning_rate', '--batch-size': '--batch_size', '--weight-decay': '--weight_decay',
               '--gpu-id': '--gpu_id'}

# SSKD's own float flags: (name, the official default, meaning). Each also answers to the official hyphenated
# spelling (--tf-T for --tf_T).
SSKD_OWN_FLAGS = [
    ('tf_weight', 2.7, 'weight of KD on the rotated views'),
    ('tf_T', 4.0, 'temperature of KD on the rotated views'),
    ('ss_T', 0.5, 'temperature of the self-supervision similarity KL'),
    ('ratio_tf', 1.0, 'share of the rotated views the teacher misclassifies that are distilled'),
    ('ratio_ss', 0.75, "share of the rotated views the teacher's SS head mismatches that are distilled"),
    ('t_lr', 0.05, "lr of the teacher's SS head in the init stage"),
]


class SSHead(nn.Sequential):
    """The official ``proj_head``: Linear(d, d), ReLU, Linear(d, d) on the pooled feature (d its width)."""

    def __init__(self, dim):
        super().__init__(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


@dataclass
class ViewsOutput(NetOutput):
    """A network's outputs on the four views: ``logits`` of the un-rotated images (B), ``rotated_logits``
    of the rotated ones (3B, image by image), ``embedding`` the SS head's output (B, 4, d)."""
    rotated_logits: Optional[torch.Tensor] = None
    embedding: Optional[torch.Tensor] = None


def split_views(logits, embedding):
    """ViewsOutput of a 4B-row forward pass (rows ordered as ``rotated_views``)."""
    per_image = logits.unflatten(0, (-1, VIEWS))
    return ViewsOutput(logits=per_image[:, 0], rotated_logits=per_image[:, 1:].flatten(0, 1),
                       embedding=embedding.unflatten(0, (-1, VIEWS)))


def view_similarity(embedding):
    """(3B, B) cosine similarities: row = a rotated view (image by image), column = an un-rotated image."""
    unit = F.normalize(embedding.float(), dim=-1)
    return unit[:, 1:].flatten(0, 1) @ unit[:, 0].t()


def view_owners(batch, device):
    """The un-rotated image each row of ``view_similarity`` belongs to: 0, 0, 0, 1, 1, 1, ..."""
    return torch.arange(batch, device=device).repeat_interleave(VIEWS - 1)


def kept_rows(scores, targets, ratio):
    """Boolean mask of the rows SSKD distils: every row whose ``targets`` entry scores highest (rank 0),
    and of the others the floor(ratio * count) with the lowest rank of the target, earlier rows first on
    ties. Computed without reading anything back from the device."""
    rank = (scores > scores.gather(1, targets[:, None])).sum(1)
    wrong = (rank > 0).sum()
    keep = (rank.numel() - wrong) + torch.floor(wrong.double() * ratio).long()  # int(n * ratio), as Python
    order = torch.sort(rank, stable=True).indices
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=order.device)
    return position < keep


def selected_kd(logits_s, logits_t, keep, temperature):
    """T^2 * the mean over the kept rows of KL(softmax(t/T) || softmax(s/T)); 0 when no row is kept."""
    log_p_s = F.log_softmax(logits_s.float() / temperature, dim=1)
    log_p_t = F.log_softmax(logits_t.float() / temperature, dim=1)
    per_row = F.kl_div(log_p_s, log_p_t, reduction='none', log_target=True).sum(1)
    kept = keep.to(per_row.dtype)
    return (per_row * kept).sum() / kept.sum().clamp(min=1) * temperature ** 2


@register('sskd')
class SSKD(TwoStage, Distiller):
    """SSKD: the student and both SS heads; ``run_networks`` runs the networks on the four views."""
    needs_feats = True
    default_weights = (0.1, 0.9, 10.0)  # student.py: --ce-weight, --kd-weight, --ss-weight
    init_stage_only = ('t_head',)
    init_epochs = 60  # student.py's --t-epoch

    @classmethod
    def rewrite_argv(cls, argv):
        rewritten = []
        for word in argv:
            flag, sep, value = word.partition('=')
            if flag in _SSKD_FLAGS:
                word = _SSKD_FLAGS[flag] + sep + value
            rewritten.append(word)
        return rewritten

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group("SSKD (the official student.py's hyphenated spellings work too: "
                                          "--ce-weight, --kd-weight, --ss-weight = -r, -a, -b; --t-epoch = "
                                          "--init_epochs)")
        for name, default, meaning in SSKD_OWN_FLAGS:
            group.add_argument(f'--{name}', f"--{name.replace('_', '-')}", dest=name, type=float, default=default,
                               help=meaning)
        group.add_argument('--t_milestones', '--t-milestones', dest='t_milestones', type=int, nargs='+',
                           default=[30, 45], help="init-stage epochs after which the head's lr is x0.1")

    @staticmethod
    def settings(args):
        require(args, positive=['tf_T', 'ss_T', 't_lr'])
        for flag, value in (('--ratio_tf', args.ratio_tf), ('--ratio_ss', args.ratio_ss)):
            if not 0 <= value <= 1:
                raise KDZooError(f"{flag} is a share of the views and must lie in [0, 1], got {value}")
        if args.tf_weight < 0:
            raise KDZooError(f"the loss weight --tf_weight cannot be negative, got {args.tf_weight}")
        milestones = args.t_milestones
        if any(m <= 0 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise KDZooError(f"--t_milestones must be a rising list of positive epochs such as 30 45, got "
                             f"{' '.join(map(str, milestones))}")

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        self.tf_weight, self.tf_T, self.ss_T = args.tf_weight, args.tf_T, args.ss_T
        self.ratio_tf, self.ratio_ss = args.ratio_tf, args.ratio_ss
        self.t_lr, self.t_milestones = args.t_lr, list(args.t_milestones)
        self.s_head = SSHead(probe_s.feats[-1].shape[1])
        self.t_head = SSHead(probe_t.feats[-1].shape[1])
        print(f"SSKD: rotated-view KD x{self.tf_weight:g} (T {self.tf_T:g}, ratio {self.ratio_tf:g}), "
              f"SS x{self.beta:g} (T {self.ss_T:g}, ratio {self.ratio_ss:g}); teacher SS head: {args.init_epochs} "
              f"epochs, lr {self.t_lr:g} x0.1 after {', '.join(map(str, self.t_milestones))}")
        if args.init_epochs == 0:
            print("SSKD: --init_epochs 0 leaves the teacher's SS head untrained; its similarities are then noise")

    def teacher_request(self):
        """The teacher on the batch's four views at once (the official 4B batch), with its features."""
        return TeacherRequest(feats=True, view='rotations')

    def init_teacher_request(self):
        return self.teacher_request()

    def teacher_views(self, out_t, train_head):
        """The teacher's ViewsOutput; its SS head gets gradients only in the init stage (``train_head``)."""
        with torch.set_grad_enabled(train_head and torch.is_grad_enabled()):
            return split_views(out_t.logits, self.t_head(out_t.feats[-1]))

    def forward_train(self, student, batch, out_t, epoch):
        """The student on the four views as one batch of 4B (so its BatchNorm sees all of them, as the
        official code), then the terms; the logits trained on are the un-rotated views'."""
        feats_s, logits_s = student(batch.view('rotations'), is_feat=True)
        out_s = split_views(logits_s, self.s_head(feats_s[-1]))
        return out_s.logits, self.losses(out_s, self.teacher_views(out_t, False), batch, epoch)

    def forward_init(self, student, batch, out_t):
        """The teacher's SS head alone, on the frozen teacher: the student is not run; the accuracy shown is
        the teacher's on the un-rotated views."""
        views_t = self.teacher_views(out_t, True)
        return views_t.logits, self.init_loss(None, views_t, batch)

    def losses(self, out_s, out_t, batch, epoch):
        targets = batch.targets
        terms = self.ce_kd_terms(out_s.logits, out_t.logits, targets, batch, epoch)
        if self.tf_weight:
            keep = kept_rows(out_t.rotated_logits, targets.repeat_interleave(VIEWS - 1), self.ratio_tf)
            terms['tf'] = self.tf_weight * selected_kd(out_s.rotated_logits, out_t.rotated_logits, keep, self.tf_T)
        if self.beta:
            sim_s, sim_t = view_similarity(out_s.embedding), view_similarity(out_t.embedding)
            keep = kept_rows(sim_t, view_owners(len(targets), sim_t.device), self.ratio_ss)
            terms['ss'] = self.beta * selected_kd(sim_s, sim_t, keep, self.ss_T)
        return terms

    # ---- the init stage: the teacher's SS head ------------------------------------------------------
    def init_modules(self, student):
        return [self.t_head]

    def init_lr_at(self, args, epoch):
        """--t_lr x 0.1 per milestone passed: the official MultiStepLR([30, 45]) over 0-based epochs,
        whose epoch e-1 is our (1-based) epoch e."""
        return self.t_lr * 0.1 ** sum(epoch - 1 >= m for m in self.t_milestones)

    def init_loss(self, out_s, out_t, batch):
        """Cross-entropy of matching each rotated view to its own image over the raw cosine similarities
        (teacher.py's head stage uses no temperature)."""
        similarity = view_similarity(out_t.embedding)
        return F.cross_entropy(similarity, view_owners(similarity.shape[1], similarity.device))
