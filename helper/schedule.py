"""Learning-rate schedules, as a pure function of the (1-based) epoch so that resume needs no state."""
import math


def learning_rate_at(epoch, args):
    """RepDistiller's step decay (lr times rate^(milestones passed)), or cosine to zero ('cos')."""
    if args.lr_decay == 'cos':
        return 0.5 * args.learning_rate * (1 + math.cos(math.pi * (epoch - 1) / args.epochs))
    passed = sum(epoch > milestone for milestone in args.lr_decay_epochs)
    return args.learning_rate * args.lr_decay_rate ** passed


def set_learning_rate(optimizer, lr):
    for group in optimizer.param_groups:
        group['lr'] = lr
