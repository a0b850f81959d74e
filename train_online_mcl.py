"""Train networks together from scratch by online distillation: L-MCL (or MCL with --no-meta), or ONE.

    python train_online_mcl.py --arch lmcl_resnet32_cifar                  # two ResNet-32 peers, L-MCL
    python train_online_mcl.py --arch lmcl_shufflev2_res110_cifar         # a heterogeneous pair
    python train_online_mcl.py --arch resnet32_cifar --baseline           # one network, cross-entropy
    python train_online_mcl.py --arch one_resnet32                        # ONE: 3 branches of ResNet-32

The L-MCL repo's flags (--arch, --number-net, --init-lr, --lr-type, --batch-size, --weight-decay, --alpha,
--gamma, --beta, --lam, --tau, --kd_T, --feat-dim, --meta-freq, --times) and defaults (300 epochs, batch
128 of 2 images per class, Nesterov SGD, cosine lr from 0.1, weight decay 5e-4) work, beside the shared
flags of train_teacher.py. ``--arch one_<zoo model>`` trains ONE with the official cifar_one.py's recipe
(300 epochs, batch 128, lr 0.1 x0.1 after epochs 151 and 225, SGD momentum 0.9, weight decay 1e-4; on
ImageNet the ImageNet recipe of train_teacher.py), --num-branches 3, --consistency_rampup 80, --kd_T 3.
"""

from dataset.class_balanced import ClassBalancedOrder
from engine.args import parser_for, resolve_common_args
from engine.launch import launch
from helper.console import logged
from helper.distributed import current
from helper.errors import KDZooError, run_cli
from helper.logger import RunLogger
from engine.loop import Trainer
from engine.objective import SupervisedObjective
from engine.one import ONEObjective, ONERunFiles
from engine.online import OnlineLogger, OnlineObjective, OnlineRunFiles, online_run_name
from helper.run_files import RunFiles
from helper.runtime import memory_format
from engine.setup import (count_parameters, devices_and_data, resolved_defaults, run_provenance, seed_for_run, sgd,
                          synchronise_batchnorm)
from models.lmcl import PeerSet, baseline_model, peer_models
from models.one import ONENet, branch_plan, one_model
from models.registry import build_model, check_model_name

# The L-MCL repo's recipe, used for every flag left unset.
LMCL_RECIPE = dict(epochs=300, batch_size=128, learning_rate=0.1, weight_decay=5e-4, lr_decay='cos',
                   lr_decay_epochs='150,225')
LR_TYPES = {'cosine': 'cos', 'multistep': 'step'}
# The official ONE script's recipe on the 32x32 data sets (scripts/ONE_ResNet32.sh: --epochs 300 --schedule 151
# 225 --gamma 0.1 --wd 1e-4; cifar_one.py: lr 0.1, batch 128, SGD momentum 0.9 without Nesterov). On ImageNet
# the shared ImageNet recipe fills what is not given.
ONE_RECIPE = dict(epochs=300, batch_size=128, learning_rate=0.1, weight_decay=1e-4, lr_decay='step',
                  lr_decay_epochs='151,225')
# The official ONE ResNet-110 has bottleneck blocks (its depth >= 44 rule): the zoo's resnet110_bottleneck.
ONE_ALIASES = {'one_resnet110': 'resnet110_bottleneck'}


def parse_args(argv=None):
    parser = parser_for(__doc__.splitlines()[0])
    # The L-MCL spellings of shared flags write to the same destinations; None means "not given", and the
    # L-MCL recipe fills it.
    parser.set_defaults(lr_decay=None)
    for action in parser._actions:
        if action.dest in LMCL_RECIPE:  # '%(default).0s' prints nothing and stops the formatter's "(default: None)"
            action.help = f"default {LMCL_RECIPE[action.dest]} (the L-MCL recipe)%(default).0s"
    spell = parser.add_argument_group("the L-MCL repo's spellings of shared flags")
    spell.add_argument('--batch-size', dest='batch_size', type=int, help='= --batch_size (default 128)')
    spell.add_argument('--init-lr', dest='learning_rate', type=float, help='= --learning_rate (default 0.1)')
    spell.add_argument('--weight-decay', '--wd', dest='weight_decay', type=float,
                       help='= --weight_decay (default 5e-4; ONE 1e-4)')
    spell.add_argument('--lr-type', choices=sorted(LR_TYPES), default=None,
                       help="'cosine' (default) or 'multistep' (x0.1 at --milestones); = --lr_decay cos|step")
    spell.add_argument('--milestones', '--schedule', dest='milestones', type=int, nargs='+', default=None,
                       help='= --lr_decay_epochs (150 225; ONE 151 225)')
    spell.add_argument('--manual_seed', dest='seed', type=int, help='= --seed')
    spell.add_argument('--gpu-id', dest='gpu_id', help='= --gpu_id')

    net = parser.add_argument_group('networks')
    net.add_argument('--arch', default='lmcl_resnet32_cifar',
                     help="an L-MCL name (lmcl_resnet32_cifar, lmcl_shufflev2_res110_cifar, ...), with "
                          "--baseline one network (resnet32_cifar, or any zoo name), or one_<zoo name> for ONE "
                          "(one_resnet32, one_resnet110 = ONE's bottleneck ResNet-110, one_ResNet18, ...)")
    net.add_argument('--number-net', dest='number_net', type=int, default=2, help='peers (homogeneous --arch)')
    net.add_argument('--baseline', action='store_true', help="one network with cross-entropy "
                     "(the L-MCL repo's main_cifar_baseline.py): the tables' baseline column")

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
    one = parser.add_argument_group('ONE (--arch one_<zoo name>; --kd_T is its temperature, 3)')
    one.add_argument('--num-branches', '--num_branches', dest='num_branches', type=int, default=3,
                     help='branches sharing the low layers (their gated sum is the teacher)')
    one.add_argument('--consistency_rampup', '--consistency-rampup', dest='consistency_rampup', type=float,
                     default=80, help='epochs of the sigmoid ramp-up of the KD term')
    one.add_argument('--branch-stages', '--branch_stages', dest='branch_stages', type=int, default=None,
                     help='last stages each branch owns (1 on CIFAR nets, 2 on ImageNet ResNets)')
    args = check_args(parser.parse_args(argv))
    identity = ['--arch', args.arch, '--number-net', str(args.number_net), '--dataset', args.dataset,
                *(['--baseline'] if args.baseline else []), *(['--no-meta'] if args.no_meta else [])]
    args.run_defaults = resolved_defaults(lambda argv: check_args(parser.parse_args(argv)), identity)
    return args


def check_args(args):
    """Models, L-MCL (or ONE) defaults and values, then the shared checks of resolve_common_args."""
    args.one = one_model(args.arch) is not None and not args.baseline
    if args.one:
        return check_one_args(args)
    if args.dataset == 'imagenet':
        raise KDZooError("train_online_mcl.py trains on the 32x32 data sets (cifar100, cifar10, digits); the ImageNet "
                         "recipe of L-MCL is not part of kdzoo")
    if args.baseline:
        args.peers = [baseline_model(args.arch)]
    else:
        if args.number_net < 2:
            raise KDZooError(f"--number-net must be at least 2 (peers learn from each other), got "
                             f"{args.number_net}")
        args.peers = peer_models(args.arch, args.number_net)
    if args.lr_type is not None:
        args.lr_decay = LR_TYPES[args.lr_type]
    if args.milestones is not None:
        args.lr_decay_epochs = ','.join(map(str, args.milestones))
    for key, value in LMCL_RECIPE.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for flag, value in (('--meta-freq', args.meta_freq), ('--times', args.times), ('--feat-dim', args.feat_dim)):
        if value < 1:
            raise KDZooError(f"{flag} must be at least 1, got {value}")
    for flag, value in (('--tau', args.tau), ('--kd_T', args.kd_T)):
        if value <= 0:
            raise KDZooError(f"{flag} must be positive, got {value}")
    for flag in ('alpha', 'gamma', 'beta', 'lam'):
        if getattr(args, flag) < 0:
            raise KDZooError(f"the loss weight --{flag} cannot be negative, got {getattr(args, flag)}")
    args = resolve_common_args(args, args.arch)
    args.nesterov = True  # the L-MCL repo's optimiser, whether or not --nesterov was given (nesterov_sgd)
    args.lr_note = (f"lr {args.learning_rate} ({'cosine' if args.lr_decay == 'cos' else 'step'} decay), "
                    f"Nesterov SGD, weight decay {args.weight_decay}, batch {args.batch_size}")
    return args


def check_one_args(args):
    """ONE: the zoo model, the official recipe for what is not given (the shared ImageNet one on ImageNet)."""
    name = ONE_ALIASES.get(args.arch, one_model(args.arch))
    check_model_name(name, args.dataset, '--arch (after one_)')
    branch_plan(build_model(name, 10, args.dataset))  # a family ONE cannot branch: one line, before anything runs
    args.peers = [name]
    if args.lr_type is not None:
        args.lr_decay = LR_TYPES[args.lr_type]
    if args.milestones is not None:
        args.lr_decay_epochs = ','.join(map(str, args.milestones))
    if args.lr_decay is None:
        args.lr_decay = 'step'
    if args.dataset != 'imagenet':
        for key, value in ONE_RECIPE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    if args.num_branches < 2:
        raise KDZooError(f"--num-branches must be at least 2 (the ensemble teacher needs them), got "
                         f"{args.num_branches}")
    if args.kd_T <= 0:
        raise KDZooError(f"--kd_T must be positive, got {args.kd_T}")
    if args.consistency_rampup < 0:
        raise KDZooError(f"--consistency_rampup cannot be negative, got {args.consistency_rampup}")
    args = resolve_common_args(args, name)
    args.lr_note = (f"lr {args.learning_rate} ({'cosine' if args.lr_decay == 'cos' else 'step'} decay), "
                    f"{'Nesterov ' if args.nesterov else ''}SGD momentum {args.momentum}, weight decay "
                    f"{args.weight_decay}, batch {args.batch_size}")
    return args


def nesterov_sgd(modules, args):
    """The L-MCL repo's optimiser: SGD with Nesterov momentum, whether or not --nesterov was given."""
    args.nesterov = True
    return sgd(modules, args)


def run_files(args):
    """The run's method ('baseline', 'one', 'mcl' or 'lmcl') and its files under save/online/."""
    method = 'baseline' if args.baseline else 'one' if args.one else ('mcl' if args.no_meta else 'lmcl')
    if args.one:
        return method, ONERunFiles(args.save_root, online_run_name(args.arch, args.num_branches, method,
                                                                   args.dataset, args.trial), args.arch, args.peers[0])
    if args.baseline:
        name = args.peers[0]
        return method, RunFiles(args.save_root, 'online', f'{name}_baseline_{args.dataset}_trial_{args.trial}', name)
    return method, OnlineRunFiles(args.save_root, online_run_name(args.arch, len(args.peers), method, args.dataset,
                                                                  args.trial), args.arch, args.peers)


def setup(args):
    """Run files, seed, device and data; the sampler is checked before anything is written."""
    method, files = run_files(args)
    files.refuse_overwrite(args.resume, args.overwrite)
    resume_path = files.resume_path(args.resume, args.epochs) if args.resume else None
    seed_for_run(args, resume_path)
    device, precision, data = devices_and_data(args)
    if not args.baseline and not args.one:  # ONE draws plain shuffled batches
        # Every anchor of the contrastive losses needs a positive: batches of 2 images per class.
        data.train.batch_order = ClassBalancedOrder(data.train_labels, args.batch_size, '--batch-size')
        world = current().world_size
        if world > 1 and (args.batch_size // world) % 2:
            # A process's share must hold whole pairs, so that it also serves the pairs' CE and KD terms.
            raise KDZooError(f"--batch-size {args.batch_size} gives each of the {world} processes "
                             f"{args.batch_size // world} images; pass a multiple of {2 * world} (pairs of a class "
                             f"stay in one process)")
    return method, files, resume_path, device, precision, data


def main(argv=None):
    """Parse, then train here or in one process per GPU (--multiprocessing-distributed, torchrun)."""
    return launch(parse_args(argv), train)


@logged
def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    method, files, resume_path, device, precision, data = setup(args)
    fmt = memory_format(precision)
    record = run_provenance(device, precision, data)
    if args.baseline:
        model = build_model(args.peers[0], data.num_classes, args.dataset).to(device, memory_format=fmt)
        objective = SupervisedObjective(model)
        logger = RunLogger(files, args, count_parameters(model), provenance=record)
    elif args.one:
        return train_one(args, files, resume_path, device, precision, data, record)
    else:
        objective = OnlineObjective(PeerSet(args.peers, data.num_classes, args.dataset), args,
                                    meta=not args.no_meta).to(device, memory_format=fmt)
        logger = OnlineLogger(files, args, count_parameters(objective.model), provenance=record)
    synchronise_batchnorm(objective, args, device)
    deployed = [count_parameters(m) for m in ([model] if args.baseline else
                                              [peer.backbone for peer in objective.model.peers])]
    print(f"{method} {args.arch}: {' & '.join(args.peers)} ({', '.join(f'{n / 1e6:.2f}M' for n in deployed)} "
          f"parameters deployed); {args.dataset} ({data.num_train} training images, {len(data.train)} steps "
          f"per epoch); {device.type}, {precision}; {args.lr_note}; seed {args.seed}")

    if current().is_main:  # the other ranks of a job write nothing
        files.create()
    trainer = Trainer(objective, data, nesterov_sgd(objective.trainable_modules(), args), args, files, logger,
                      device, precision)
    if resume_path:
        trainer.resume(resume_path)
    state = trainer.fit()
    if current().is_main:
        report(args, files, state)
    return state


def train_one(args, files, resume_path, device, precision, data, record):
    """ONE: one multi-branch network; SGD with plain momentum, as the official cifar_one.py."""
    network = ONENet(args.peers[0], data.num_classes, args.dataset, args.num_branches, args.branch_stages)
    objective = ONEObjective(network, args).to(device, memory_format=memory_format(precision))
    logger = RunLogger(files, args, count_parameters(network), provenance=record)
    synchronise_batchnorm(objective, args, device)
    print(f"one {args.arch}: {args.num_branches} branches of {args.peers[0]} from its stage "
          f"{network.shared_index} on ({count_parameters(network.backbone) / 1e6:.2f}M parameters deployed, "
          f"{count_parameters(network) / 1e6:.2f}M trained); {args.dataset} ({data.num_train} training images, "
          f"{len(data.train)} steps per epoch); {device.type}, {precision}; {args.lr_note}; T {args.kd_T:g}, "
          f"ramp-up {args.consistency_rampup:g} epochs; seed {args.seed}")
    if current().is_main:
        files.create()
    trainer = Trainer(objective, data, sgd(objective.trainable_modules(), args), args, files, logger, device,
                      precision)
    if resume_path:
        trainer.resume(resume_path)
    state = trainer.fit()
    if current().is_main:
        last, history = state['history'][-1], state['history']
        ensemble_best = max(r['val_ensemble_top1'] for r in history)
        print(f"one {args.peers[0]} (branch 0, deployed): last top-1 {last['val_top1']:.2f}%, best "
              f"{state['best_acc']:.2f}% at epoch {state['best_epoch']}; ensemble (ONE-E) last "
              f"{last['val_ensemble_top1']:.2f}%, best {ensemble_best:.2f}%; {files.branch_checkpoint('best')}")
    return state


def report(args, files, state):
    last = state['history'][-1]
    if args.baseline:
        print(f"baseline {args.peers[0]}: last top-1 {last['val_top1']:.2f}%, best {state['best_acc']:.2f}% at "
              f"epoch {state['best_epoch']}; saved in {files.folder}")
        return
    for i, name in enumerate(args.peers):
        best = max(r[f'val_peer{i}_top1'] for r in state['history'])
        print(f"peer {i} {name} (own head): last top-1 {last[f'val_peer{i}_top1']:.2f}%, best {best:.2f}%; "
              f"{files.peer_checkpoint(i, 'best')}")
    print(f"saved in {files.folder} (metrics.json also holds the released code's best-over-all-heads number)")


if __name__ == '__main__':
    run_cli(main)
