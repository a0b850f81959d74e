"""L-MCL (Yang et al., "Online Knowledge Distillation via Mutual Contrastive Learning for Visual Recognition",
TPAMI 2023; winycg/L-MCL's main_layer_mcl_cifar_meta.py) and MCL, the same without the meta network
(``--no-meta``), as online methods.

M peers train together from scratch. Each peer (``PeerNet``) is a zoo model (its ``backbone``, the network
that is deployed) plus two auxiliary branches, as the L-MCL repo builds them: the branch after stage 1 is a
fresh copy of stages 2 and 3, the branch after stage 2 a fresh copy of stage 3, each followed by the
backbone's head, global pooling and its own classifier (models/lmcl.py's ``stage_plan`` and
``AuxiliaryBranch``). The copies are taken from another freshly constructed zoo model, so they are
initialised as the zoo does. A peer yields S = 3 stage embeddings (pooled vectors, all of the backbone's final
width) and 3 logits, ordered branch 1, branch 2, backbone.

The model saved under ``model`` is the ``PeerSet`` (every peer with its branches); the projection heads and
the aggregator (online/mcl.py) train with it under the run's optimiser. The meta weight network has its own
optimiser and is updated in ``after_step`` every ``--meta-freq`` steps by differentiating the stage
cross-entropy after unrolled virtual SGD steps (``torch.func.functional_call`` on detached copies of the
weights, so the peers themselves are never touched). Validation scores every head; each peer's own backbone
head is the deployed network, exported after every epoch as a plain zoo checkpoint.

In a multi-process job the contrastive losses, which compare every sample with every other, are computed on
the global batch: each process gathers every process's projections (with their gradients) and labels, so the
job optimises what one process would on the whole batch. The meta step gathers the global batch and runs
identically on every process; its gradients are averaged all the same, so the meta networks stay equal
whatever the arithmetic's rounding.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from dataset.class_balanced import ClassBalancedOrder
from helper import distributed, sync_bn
from helper.checkpoint import atomic_save
from helper.errors import KDZooError
from helper.logger import RunLogger
from helper.run_files import RunFiles
from helper.runtime import autocast
from models.lmcl import NUMBER_STAGES, AuxiliaryBranch, peer_models, stage_plan
from models.registry import build_model

from helper.schedule import sgd
from .base import OnlineMethod, TrainStep, register
from .mcl import Aggregator, MetaWeightNetwork, ProjectionHeads, mcl_losses, weighted_kl

# The L-MCL repo's recipe, used for every shared flag left unset (its baseline script's too).
LMCL_RECIPE = dict(epochs=300, batch_size=128, learning_rate=0.1, weight_decay=5e-4, lr_decay='cos',
                   lr_decay_epochs='150,225')


def refuse_imagenet(args):
    """L-MCL and its baseline train on the 32x32 data sets only."""
    if args.dataset == 'imagenet':
        raise KDZooError("train_online_mcl.py trains on the 32x32 data sets (cifar100, cifar10, digits); the ImageNet "
                         "recipe of L-MCL is not part of kdzoo")


class PeerNet(nn.Module):
    """A zoo network and its two auxiliary branches; ``forward`` gives (embeddings, logits), 3 each."""

    def __init__(self, name, num_classes, dataset='cifar100'):
        super().__init__()
        self.name = name
        self.backbone = build_model(name, num_classes, dataset)
        stage_plan(self.backbone)  # refuse unsupported families before building anything else
        branches = []
        for start in range(1, NUMBER_STAGES):
            donor = build_model(name, num_classes, dataset)
            *stages, head = stage_plan(donor)
            branches.append(AuxiliaryBranch(stages[start:], head, donor.get_classifier()))
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        feats, logits = self.backbone(x, is_feat=True)
        embeddings, all_logits = [], []
        for stage, branch in enumerate(self.branches, 1):
            embedding, branch_logits = branch(feats[stage])
            embeddings.append(embedding)
            all_logits.append(branch_logits)
        return embeddings + [feats[-1]], all_logits + [logits]


class PeerSet(nn.Module):
    """The M peers trained together; ``forward`` gives per-peer lists of stage embeddings and logits."""

    def __init__(self, names, num_classes, dataset='cifar100'):
        super().__init__()
        self.peers = nn.ModuleList(PeerNet(name, num_classes, dataset) for name in names)

    def forward(self, x):
        outputs = [peer(x) for peer in self.peers]
        return [emb for emb, _ in outputs], [logits for _, logits in outputs]


class OnlineLogger(RunLogger):
    """The shared loop's epoch line (whose test top-1 is the peers' mean), then one line per epoch with
    every peer's own head and the released code's number."""

    def epoch_end(self, record, state, progress, stage='main', epochs=None):
        super().epoch_end(record, state, progress, stage, epochs)
        peers = peer_summary(state['history'], self.files.peer_names)
        own = ' | '.join(f"#{p['peer']} {p['model']} {p['last']['top1']:.2f}% (best {p['best']['top1']:.2f}%)"
                         for p in peers)
        released = max(p['released_code_best']['top1'] for p in peers)
        progress.write(f"  peers, own head: {own};  released-code metric (best head of any peer, any "
                       f"epoch, auxiliary branches included): {released:.2f}%")


@register('lmcl')
class LMCL(OnlineMethod):
    """CE on every stage and aggregated logit, KD from every aggregated logit to every backbone head, and the
    weighted mutual contrastive losses; ``meta`` adds the layer-wise meta-optimisation of the weights."""
    recipe = LMCL_RECIPE
    nesterov = True  # the L-MCL repo's optimiser, whether or not --nesterov is given
    logger_class = OnlineLogger  # a line per epoch with every peer's own head
    meta = True

    @classmethod
    def add_arguments(cls, parser):
        mcl = parser.add_argument_group('L-MCL')
        mcl.add_argument('--alpha', type=float, default=0.1, help='weight of VCL')
        mcl.add_argument('--gamma', type=float, default=1.0, help='weight of soft VCL')
        mcl.add_argument('--beta', type=float, default=0.1, help='weight of ICL')
        mcl.add_argument('--lam', type=float, default=1.0, help='weight of soft ICL')
        mcl.add_argument('--tau', type=float, default=0.1, help='temperature of the contrastive distributions')
        mcl.add_argument('--kd_T', type=float, default=3, help='temperature of the KL terms')
        mcl.add_argument('--feat-dim', dest='feat_dim', type=int, default=128, help='projection width')
        mcl.add_argument('--meta-freq', dest='meta_freq', type=int, default=50, help='steps between meta steps')
        mcl.add_argument('--times', type=int, default=2, help='virtual steps on the contrastive loss per meta step')
        mcl.add_argument('--no-meta', dest='no_meta', action='store_true',
                         help='weight every contrastive pair 1 and skip the meta-optimisation (MCL)')

    @classmethod
    def networks(cls, args):
        refuse_imagenet(args)
        if args.number_net < 2:
            raise KDZooError(f"--number-net must be at least 2 (peers learn from each other), got "
                             f"{args.number_net}")
        return peer_models(args.arch, args.number_net)

    @classmethod
    def check(cls, args):
        for flag, value in (('--meta-freq', args.meta_freq), ('--times', args.times), ('--feat-dim', args.feat_dim)):
            if value < 1:
                raise KDZooError(f"{flag} must be at least 1, got {value}")
        for flag, value in (('--tau', args.tau), ('--kd_T', args.kd_T)):
            if value <= 0:
                raise KDZooError(f"{flag} must be positive, got {value}")
        for flag in ('alpha', 'gamma', 'beta', 'lam'):
            if getattr(args, flag) < 0:
                raise KDZooError(f"the loss weight --{flag} cannot be negative, got {getattr(args, flag)}")

    @classmethod
    def build_network(cls, args, num_classes):
        return PeerSet(args.peers, num_classes, args.dataset)

    @classmethod
    def prepare_data(cls, args, data):
        """Every anchor of the contrastive losses needs a positive: batches of 2 images per class."""
        data.train.batch_order = ClassBalancedOrder(data.train_labels, args.batch_size, '--batch-size')
        world = distributed.current().world_size
        if world > 1 and (args.batch_size // world) % 2:
            # A process's share must hold whole pairs, so that it also serves the pairs' CE and KD terms.
            raise KDZooError(f"--batch-size {args.batch_size} gives each of the {world} processes "
                             f"{args.batch_size // world} images; pass a multiple of {2 * world} (pairs of a class "
                             f"stay in one process)")

    def __init__(self, peers, args, meta=None):
        super().__init__(peers, args)
        meta = self.meta if meta is None else meta
        self.names = [peer.name for peer in peers.peers]
        dims = [peer.backbone.get_classifier().in_features for peer in peers.peers]
        self.heads = ProjectionHeads(dims, NUMBER_STAGES, args.feat_dim)
        self.aggregator = Aggregator(dims, NUMBER_STAGES)
        self.args = args
        self.meta_net = MetaWeightNetwork(dims, NUMBER_STAGES) if meta else None
        self.meta_optimizer = sgd([self.meta_net], args, nesterov=True) if meta else None

    def trainable_modules(self):
        return [self.model, self.heads, self.aggregator]

    def deployed(self):
        return [peer.backbone for peer in self.model.peers]

    # ---- the loss of one step -----------------------------------------------------------------
    def contrastive(self, projected, targets, weights):
        """The four contrastive terms, each times its weight (--alpha, --gamma, --beta, --lam)."""
        a = self.args
        vcl, soft_vcl, icl, soft_icl = mcl_losses(projected, targets, weights, a.tau, a.kd_T)
        return dict(vcl=a.alpha * vcl, soft_vcl=a.gamma * soft_vcl, icl=a.beta * icl, soft_icl=a.lam * soft_icl)

    def step(self, batch, epoch):
        embeddings, logits = self.model(batch.images)
        targets = batch.targets
        weights = None
        if self.meta_net is not None:
            with torch.no_grad():
                weights = self.meta_net(embeddings)
        aggregated = self.aggregator(embeddings, logits)
        projected, all_targets = self.heads(embeddings), targets
        if distributed.current().enabled:
            projected = [[distributed.gather_with_grad(p) for p in peer] for peer in projected]
            all_targets = distributed.all_gather_step(targets)
            weights = None if weights is None else [distributed.all_gather_step(w) for w in weights]
        losses = dict(
            ce=sum(F.cross_entropy(logit, targets) for peer in logits for logit in peer),
            ce_aggregated=sum(F.cross_entropy(logit, targets) for logit in aggregated),
            kd=sum(weighted_kl(peer[-1], target, self.args.kd_T, 1.0) for peer in logits for target in aggregated),
            **self.contrastive(projected, all_targets, weights))
        return TrainStep(logits=logits[0][-1], losses=losses)

    def predict(self, images):
        """The first peer's own network."""
        return self.model.peers[0].backbone(images)

    # ---- layer-wise meta-optimisation ---------------------------------------------------------
    def after_step(self, batch, epoch, step, lr):
        # The reference runs it on the first batch of an epoch and every meta-freq batches after.
        if self.meta_net is not None and (step - 1) % self.args.meta_freq == 0:
            if distributed.current().enabled:
                images, targets = distributed.all_gather_step(batch.images), distributed.all_gather_step(batch.targets)
                with sync_bn.local_batch_statistics():  # the batch is global already
                    self.meta_step(images, targets, lr)
            else:
                self.meta_step(batch.images, batch.targets, lr)

    def _forward(self, weights, buffers, images):
        """(embeddings, logits, projected embeddings) with the peers and heads at ``weights``."""
        model = {name[len('model.'):]: w for name, w in weights.items() if name.startswith('model.')}
        heads = {name[len('heads.'):]: w for name, w in weights.items() if name.startswith('heads.')}
        embeddings, logits = functional_call(self.model, {**model, **buffers}, (images,))
        return embeddings, logits, functional_call(self.heads, heads, (embeddings,))

    def _inner_loss(self, weights, buffers, images, targets):
        embeddings, _, projected = self._forward(weights, buffers, images)
        return sum(self.contrastive(projected, targets, self.meta_net(embeddings)).values())

    def _outer_loss(self, weights, buffers, images, targets):
        _, logits, _ = self._forward(weights, buffers, images)
        return sum(F.cross_entropy(logit, targets) for peer in logits for logit in peer)

    def _virtual_sgd(self, loss, weights, velocity, lr):
        """One differentiable step of PyTorch's SGD (momentum, no Nesterov, weight decay), starting from
        empty momentum buffers as the reference's rolled-back optimiser does. A weight the loss does not
        reach gets a zero gradient, so weight decay still moves it, as in the reference."""
        momentum, decay = self.args.momentum, self.args.weight_decay
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True, allow_unused=True)
        new_weights, new_velocity = {}, {}
        for (name, w), g in zip(weights.items(), grads):
            d = decay * w if g is None else g + decay * w
            v = d if name not in velocity else momentum * velocity[name] + d
            new_weights[name], new_velocity[name] = w - lr * v, v
        return new_weights, new_velocity

    def meta_step(self, images, targets, lr):
        """--times virtual steps on the contrastive loss, one on the stage CE, then one SGD step of the
        meta network on the stage CE at the resulting weights, differentiated through all of them."""
        weights = {f'{prefix}.{name}': p.detach().requires_grad_()
                   for prefix, module in (('model', self.model), ('heads', self.heads))
                   for name, p in module.named_parameters()}
        # BN running statistics change in train-mode forwards; copies keep the peers' own untouched.
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        velocity = {}
        for _ in range(self.args.times):
            loss = self._inner_loss(weights, buffers, images, targets)
            weights, velocity = self._virtual_sgd(loss, weights, velocity, lr)
        loss = self._outer_loss(weights, buffers, images, targets)
        weights, velocity = self._virtual_sgd(loss, weights, velocity, lr)
        meta_params = list(self.meta_net.parameters())
        grads = torch.autograd.grad(self._outer_loss(weights, buffers, images, targets), meta_params)
        for p, g in zip(meta_params, grads):
            p.grad = g
        if distributed.current().enabled:
            distributed.all_reduce_gradients(meta_params, 1)
        for group in self.meta_optimizer.param_groups:
            group['lr'] = lr
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)

    # ---- resume: the meta optimiser's momentum too --------------------------------------------
    def resume_state(self):
        state = super().resume_state()
        if self.meta_optimizer is not None:
            state['meta_optimizer'] = self.meta_optimizer.state_dict()
        return state

    def load_resume_state(self, model_state, extra_state):
        # 'meta_optimizer' is no module entry; the base class's non-strict load passes over it.
        super().load_resume_state(model_state, extra_state)
        if self.meta_optimizer is not None:
            self.meta_optimizer.load_state_dict(extra_state['meta_optimizer'])

    # ---- validation and export ----------------------------------------------------------------
    @torch.no_grad()
    def validate(self, loader, device, precision, score=None):
        """The peers' mean top-1/top-5/loss over their own backbone heads, and per head numbers:
        ``val_peer<i>_top1`` (backbone), ``val_peer<i>_branch<k>_top1`` (auxiliary branches)."""
        heads = len(self.names) * NUMBER_STAGES
        correct1 = correct5 = loss_sum = torch.zeros(heads, device=device)
        count = 0
        for batch in loader:
            with autocast(device, precision):
                _, logits = self.model(batch.images)
            flat = torch.stack([logit for peer in logits for logit in peer]).float()  # (heads, B, classes)
            targets = batch.targets
            top5 = flat.topk(min(5, flat.size(-1)), dim=-1).indices == targets[None, :, None]
            correct1 = correct1 + top5[..., 0].sum(-1)
            correct5 = correct5 + top5.any(-1).sum(-1)
            loss_sum = loss_sum + F.cross_entropy(flat.flatten(0, 1), targets.repeat(heads),
                                                  reduction='none').view(heads, -1).sum(-1)
            count += targets.size(0)
        if distributed.current().enabled:  # each process scored its own part of the validation set
            totals = distributed.all_reduce_patient(torch.cat([correct1.float(), correct5.float(), loss_sum.float(),
                                                               torch.tensor([float(count)], device=device)]))
            correct1, correct5, loss_sum = totals[:-1].view(3, heads)
            count = int(totals[-1])
        top1, top5 = (100.0 * c.view(-1, NUMBER_STAGES) / max(count, 1) for c in (correct1, correct5))
        loss = (loss_sum / max(count, 1)).view(-1, NUMBER_STAGES)
        extra = {}
        for i in range(len(self.names)):
            extra[f'val_peer{i}_top1'], extra[f'val_peer{i}_top5'] = float(top1[i, -1]), float(top5[i, -1])
            for k in range(1, NUMBER_STAGES):
                extra[f'val_peer{i}_branch{k}_top1'] = float(top1[i, k - 1])
        return float(top1[:, -1].mean()), float(top5[:, -1].mean()), float(loss[:, -1].mean()), extra

    def after_epoch(self, state, files):
        """Write every peer's backbone as a plain zoo checkpoint: ``_last`` always, ``_best`` when its own
        top-1 is the best so far."""
        record = state['history'][-1]
        for i, peer in enumerate(self.model.peers):
            scores = [r[f'val_peer{i}_top1'] for r in state['history']]
            top1, best = scores[-1], max(scores)
            entry = dict(model=peer.backbone.state_dict(), epoch=record['epoch'], accuracy=top1, best_acc=best,
                         arch=peer.name)
            os.makedirs(os.path.dirname(files.peer_checkpoint(i, 'last')), exist_ok=True)
            atomic_save(entry, files.peer_checkpoint(i, 'last'))
            if scores.index(best) == len(scores) - 1:
                atomic_save(entry, files.peer_checkpoint(i, 'best'))

    # ---- the run --------------------------------------------------------------------------------
    @classmethod
    def run_files(cls, args):
        return OnlineRunFiles(args.save_root, cls.run_name(args), args.arch, args.peers)

    def summary(self, args, files, state):
        last = state['history'][-1]
        lines = []
        for i, name in enumerate(args.peers):
            best = max(r[f'val_peer{i}_top1'] for r in state['history'])
            lines.append(f"peer {i} {name} (own head): last top-1 {last[f'val_peer{i}_top1']:.2f}%, best "
                         f"{best:.2f}%; {files.peer_checkpoint(i, 'best')}")
        lines.append(f"saved in {files.folder} (metrics.json also holds the released code's best-over-all-heads "
                     f"number)")
        return '\n'.join(lines)


@register('mcl')
class MCL(LMCL):
    """L-MCL without the meta network (--no-meta): every contrastive pair weighs 1 and there is no meta step.
    It is the layer-wise method with weight 1, not the conference MCL script (docs/methods.md)."""
    meta = False


def peer_summary(history, names):
    """Per peer: last and best top-1 of its own head, and the released code's number (the best over all
    of its heads, auxiliary branches included, and over epochs). Empty before the first epoch ends."""
    if not history:
        return []
    peers = []
    for i, name in enumerate(names):
        own = [r[f'val_peer{i}_top1'] for r in history]
        any_head = [max(r[f'val_peer{i}_top1'], *(r[f'val_peer{i}_branch{k}_top1'] for k in range(1, NUMBER_STAGES)))
                    for r in history]
        best = max(range(len(own)), key=own.__getitem__)  # the first epoch reaching the maximum
        released = max(range(len(any_head)), key=any_head.__getitem__)
        peers.append(dict(
            peer=i, model=name,
            last=dict(epoch=history[-1]['epoch'], top1=own[-1], top5=history[-1][f'val_peer{i}_top5']),
            best=dict(epoch=history[best]['epoch'], top1=own[best], top5=history[best][f'val_peer{i}_top5']),
            released_code_best=dict(epoch=history[released]['epoch'], top1=any_head[released])))
    return peers


class OnlineRunFiles(RunFiles):
    """The run folder of the shared loop, plus one sub-folder per peer, ``<model>_peer<i>/``, whose name
    lets tools/eval.py and train_student.py --path_t read the architecture."""

    def __init__(self, save_root, run_name, arch, peer_names):
        super().__init__(save_root, 'online', run_name, arch)
        self.peer_names = peer_names

    def peer_checkpoint(self, i, kind):
        tag = f'{self.peer_names[i]}_peer{i}'
        return os.path.join(self.folder, tag, f'{tag}_{kind}.pth')

    def write_metrics(self, summary):
        peers = peer_summary(summary['history'], self.peer_names)
        super().write_metrics(dict(
            summary, peers=peers,
            released_code_best_top1=max((p['released_code_best']['top1'] for p in peers), default=None),
            note="'peers' holds each peer's own backbone head (the deployed network; 'last'/'best' at the top "
                 "level are the mean over peers); 'released_code_best' is the best over all heads, auxiliary "
                 "branches included, and epochs, as the L-MCL code reports it"))
