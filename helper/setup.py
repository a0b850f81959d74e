"""Steps every training script takes before its loop: seed, device, data, optimiser, resume."""
import torch

from dataset import build_data
from .checkpoint import load_checkpoint
from .runtime import draw_seed, resolve_precision, seed_everything, select_device


def seed_for_run(args, resume_path):
    """The run's seed: --seed, else the resumed run's own (so its data order replays), else a fresh one."""
    if args.seed is None and resume_path:
        args.seed = load_checkpoint(resume_path, '--resume checkpoint').get('opt', {}).get('seed')
    if args.seed is None:
        args.seed = draw_seed()
    seed_everything(args.seed, args.deterministic)
    return args.seed


def devices_and_data(args, train_sample=None, drop_last=False):
    device = select_device(args.gpu_id)
    precision = resolve_precision(args.precision, device)
    data = build_data(args.dataset, args.data_folder, args.batch_size, device,
                      num_workers=args.num_workers, seed=args.seed, train_sample=train_sample,
                      drop_last=drop_last, channels_last=precision != 'fp32')
    return device, precision, data


def sgd(modules, args):
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=args.learning_rate, momentum=args.momentum,
                           weight_decay=args.weight_decay)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())
