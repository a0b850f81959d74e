"""Command-line arguments shared by train_teacher.py, train_student.py and train_online_mcl.py.

Names and defaults are RepDistiller's and the SimKD repo's, so their scripts run unchanged. Defaults
that depend on the data set or the model (the ImageNet recipe, RepDistiller's lr 0.01 for the small
mobile students) are left as ``None`` here and settled by ``resolve_common_args``, which also rejects
impossible values with one line each.
"""
import argparse
import os

from dataset import DATASETS
from helper.errors import KDZooError

# RepDistiller forces lr 0.01 for these (SimKD adds the _1_0/_1_5 variants), ignoring --learning_rate.
LOW_LR_MODELS = ('MobileNetV2', 'MobileNetV2_1_0', 'ShuffleV1', 'ShuffleV2', 'ShuffleV2_1_5')

# Defaults per data set: CIFAR recipe (RepDistiller; CIFAR-10 takes CIFAR-100's) and ImageNet recipe (SimKD README).
RECIPES = {
    'cifar100': dict(batch_size=64, epochs=240, learning_rate=0.05, lr_decay_epochs='150,180,210',
                     weight_decay=5e-4),
    'cifar10': dict(batch_size=64, epochs=240, learning_rate=0.05, lr_decay_epochs='150,180,210',
                    weight_decay=5e-4),
    'digits': dict(batch_size=64, epochs=240, learning_rate=0.05, lr_decay_epochs='150,180,210',
                   weight_decay=5e-4),
    'imagenet': dict(batch_size=256, epochs=120, learning_rate=0.1, lr_decay_epochs='30,60,90',
                     weight_decay=1e-4),
}


def add_common_args(parser):
    data = parser.add_argument_group('data')
    data.add_argument('--dataset', default='cifar100', choices=DATASETS,
                      help="'digits' is the small built-in data set (scikit-learn's) for demos and tests")
    data.add_argument('--data_folder', default='./data', help='where cifar-100-python/, cifar-10-batches-py/ '
                      'or the ImageNet train/ and val/ folders are')
    data.add_argument('--num_workers', type=int, default=8, help='loader processes (ImageNet folders only)')
    data.add_argument('--batch_size', type=int, default=None, help='64 on CIFAR, 256 on ImageNet; the global '
                      'batch of a multi-process run, split evenly over its processes')
    data.add_argument('--dali', choices=('gpu', 'cpu'), default=None,
                      help="read ImageNet folders with NVIDIA DALI, decoding on the GPU ('gpu') or in DALI's CPU "
                           "threads ('cpu'); needs pip install nvidia-dali-cuda120 (default: PIL in --num_workers "
                           "processes)")

    optim = parser.add_argument_group('optimisation')
    optim.add_argument('--epochs', type=int, default=None, help='240 on CIFAR, 120 on ImageNet')
    optim.add_argument('--learning_rate', type=float, default=None,
                       help='0.05 on CIFAR (0.01 for MobileNetV2/ShuffleNet), 0.1 on ImageNet')
    optim.add_argument('--lr_decay_epochs', type=str, default=None,
                       help="epochs after which the lr is multiplied by --lr_decay_rate: '150,180,210' on "
                            "CIFAR, '30,60,90' on ImageNet")
    optim.add_argument('--lr_decay_rate', type=float, default=0.1)
    optim.add_argument('--lr_decay', choices=('step', 'cos'), default='step',
                       help="'step' (RepDistiller) or 'cos' (cosine to zero over --epochs)")
    optim.add_argument('--weight_decay', type=float, default=None, help='5e-4 on CIFAR, 1e-4 on ImageNet')
    optim.add_argument('--momentum', type=float, default=0.9)
    optim.add_argument('--nesterov', action='store_true',
                       help='Nesterov momentum (the ND and L-MCL recipes; RepDistiller uses plain momentum)')

    run = parser.add_argument_group('run')
    run.add_argument('--trial', '-t', type=str, default='0',
                     help="experiment id, part of the save folder name (-t as RepDistiller's scripts)")
    run.add_argument('--print_freq', type=int, default=100, help='steps between loss checks and log lines')
    run.add_argument('--save_freq', type=int, default=40, help='epochs between ckpt_epoch_<N>.pth files')
    run.add_argument('--tb_freq', type=int, default=500, help='accepted for RepDistiller scripts; unused')
    run.add_argument('--gpu_id', type=str, default='0', help="CUDA device(s), e.g. '0' or '0,1,2,3'")
    run.add_argument('--deterministic', action='store_true',
                     help='seed 12345 and deterministic kernels: reruns and resumes give identical weights')
    run.add_argument('--seed', type=int, default=None, help='random seed (default: 12345 with '
                     '--deterministic, else drawn at random and recorded in the checkpoint)')
    run.add_argument('--precision', choices=('auto', 'bf16', 'fp16', 'fp32'), default='auto',
                     help='autocast precision; auto = bf16 where the device supports it, else fp32. '
                          'bf16/fp16 also switch the models to channels_last')
    run.add_argument('--resume', type=str, default=None, metavar='PATH|auto',
                     help="continue an interrupted run from its last checkpoint ('auto' finds it)")
    run.add_argument('--overwrite', action='store_true',
                     help='start afresh in a save folder that already holds a run')
    run.add_argument('--save_root', type=str, default='./save', help='root of the save/ layout')

    ddp = parser.add_argument_group('multi-GPU and multi-node (also: torchrun --nproc_per_node N <script> ...)')
    ddp.add_argument('--multiprocessing-distributed', '--multiprocessing_distributed',
                     dest='multiprocessing_distributed', action='store_true',
                     help='start one process per GPU of --gpu_id (per --nproc-per-node CPU worker without CUDA) '
                          'on this node, as the SimKD repo does')
    ddp.add_argument('--dist-url', '--dist_url', dest='dist_url', default='tcp://127.0.0.1:23456',
                     help="rendezvous address; node 0 binds it, every node must reach it")
    ddp.add_argument('--dist-backend', '--dist_backend', dest='dist_backend', choices=('nccl', 'gloo'), default=None,
                     help='nccl on GPUs, gloo on the CPU (default: by device)')
    ddp.add_argument('--world-size', '--world_size', dest='world_size', type=int, default=1,
                     help='number of nodes with --multiprocessing-distributed (of processes without it)')
    ddp.add_argument('--rank', type=int, default=0,
                     help='this node\'s rank with --multiprocessing-distributed (this process\'s without it)')
    ddp.add_argument('--nproc-per-node', '--nproc', dest='nproc_per_node', type=int, default=None,
                     help='processes per node with --multiprocessing-distributed (default: one per --gpu_id '
                          'entry; on a machine without CUDA, this many CPU workers with gloo)')
    ddp.add_argument('--sync-bn', '--sync_bn', dest='sync_bn', action='store_true',
                     help='batch-norm statistics over the global batch (SyncBatchNorm on GPUs, a gloo '
                          'equivalent on the CPU); without it each process normalises by its own share')
    return parser


def resolve_common_args(args, model_name):
    """Fill data-set dependent defaults, apply the lr rule, and reject impossible values."""
    recipe = RECIPES[args.dataset]
    for key in ('batch_size', 'epochs', 'lr_decay_epochs', 'weight_decay'):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    args.lr_note = _resolve_learning_rate(args, model_name, recipe['learning_rate'])

    if args.epochs <= 0:
        raise KDZooError(f"--epochs must be a positive number of epochs, got {args.epochs}")
    if args.batch_size <= 0:
        raise KDZooError(f"--batch_size must be positive, got {args.batch_size}")
    if args.learning_rate <= 0:
        raise KDZooError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.weight_decay < 0:
        raise KDZooError(f"--weight_decay cannot be negative, got {args.weight_decay}")
    if not 0 <= args.momentum < 1:
        raise KDZooError(f"--momentum must lie in [0, 1), got {args.momentum}")
    if args.lr_decay_rate <= 0:
        raise KDZooError(f"--lr_decay_rate must be positive, got {args.lr_decay_rate}")
    if args.num_workers < 0:
        raise KDZooError(f"--num_workers cannot be negative, got {args.num_workers}")
    if args.print_freq <= 0 or args.save_freq <= 0:
        raise KDZooError("--print_freq and --save_freq must be positive")
    args.lr_decay_epochs = parse_decay_epochs(args.lr_decay_epochs)
    if args.deterministic and args.seed is None:
        args.seed = 12345
    if args.dali and args.dataset != 'imagenet':
        raise KDZooError(f"--dali reads ImageNet folders; {args.dataset} is already decoded in memory, drop --dali")
    if os.sep in args.trial or '/' in args.trial:
        raise KDZooError(f"--trial '{args.trial}' cannot contain a path separator")
    return args


def parse_decay_epochs(text):
    """'150,180,210' -> [150, 180, 210]; a rising list of positive integers, or one clear error."""
    if isinstance(text, (list, tuple)):
        text = ','.join(str(x) for x in text)
    parts = [p.strip() for p in str(text).split(',') if p.strip()]
    try:
        epochs = [int(p) for p in parts]
    except ValueError:
        raise KDZooError(f"--lr_decay_epochs must be a comma-separated rising list of integers such as "
                         f"'150,180,210', got '{text}'") from None
    if not epochs or any(e <= 0 for e in epochs) or any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise KDZooError(f"--lr_decay_epochs must be a comma-separated rising list of positive integers "
                         f"such as '150,180,210', got '{text}'")
    return epochs


def _resolve_learning_rate(args, model_name, recipe_lr):
    """Set args.learning_rate and return a sentence saying which lr is used and why."""
    if args.learning_rate is not None:
        if model_name in LOW_LR_MODELS and args.dataset != 'imagenet':
            return (f"lr {args.learning_rate} as given by --learning_rate (RepDistiller would force 0.01 "
                    f"for {model_name})")
        return f"lr {args.learning_rate} as given by --learning_rate"
    if model_name in LOW_LR_MODELS and args.dataset != 'imagenet':
        args.learning_rate = 0.01
        return f"lr 0.01: RepDistiller's default for {model_name} (pass --learning_rate to change it)"
    args.learning_rate = recipe_lr
    return f"lr {recipe_lr}: the {args.dataset} recipe default"


def parser_for(description):
    return add_common_args(argparse.ArgumentParser(description=description,
                                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter))
