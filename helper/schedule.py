"""The optimiser every run builds (SGD) and its learning-rate schedule, as a pure function of the (1-based) epoch
so that resume needs no state."""
import math

import torch

from .dot import DistillationOrientedTrainer


def sgd(modules, args, nesterov=False):
    """SGD over the trainable parameters of ``modules`` at --learning_rate, --momentum and --weight_decay;
    Nesterov momentum when ``nesterov`` (an online method's declaration) or --nesterov says so. With --dot
    (train_student.py) it is DOT's split-momentum SGD (helper/dot.py): --momentum -/+ --dot_delta for the CE and
    the distillation gradients, as mdistiller's DOT trainer builds it."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if getattr(args, 'dot', False):
        return DistillationOrientedTrainer(params, lr=args.learning_rate, momentum=args.momentum - args.dot_delta,
                                           momentum_kd=args.momentum + args.dot_delta,
                                           weight_decay=args.weight_decay)
    return torch.optim.SGD(params, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay,
                           nesterov=bool(nesterov or getattr(args, 'nesterov', False)))


def learning_rate_at(epoch, args):
    """RepDistiller's step decay (lr times rate^(milestones passed)), or cosine to zero ('cos')."""
    if args.lr_decay == 'cos':
        return 0.5 * args.learning_rate * (1 + math.cos(math.pi * (epoch - 1) / args.epochs))
    passed = sum(epoch > milestone for milestone in args.lr_decay_epochs)
    return args.learning_rate * args.lr_decay_rate ** passed


def set_learning_rate(optimizer, lr):
    for group in optimizer.param_groups:
        group['lr'] = lr
