"""Train M peer networks together from scratch by online distillation: L-MCL (or MCL with --no-meta).

    python train_online_mcl.py --arch lmcl_resnet32_cifar                  # two ResNet-32 peers, L-MCL
    python train_online_mcl.py --arch lmcl_shufflev2_res110_cifar         # a heterogeneous pair
    python train_online_mcl.py --arch resnet32_cifar --baseline           # one network, cross-entropy

The L-MCL repo's flags (--arch, --number-net, --init-lr, --lr-type, --batch-size, --weight-decay, --alpha,
--gamma, --beta, --lam, --tau, --kd_T, --feat-dim, --meta-freq, --times) and defaults (300 epochs, batch
128 of 2 images per class, Nesterov SGD, cosine lr from 0.1, weight decay 5e-4) work, beside the shared
flags of train_teacher.py.
"""

from dataset.class_balanced import ClassBalancedOrder
from helper.args import parser_for, resolve_common_args
from helper.distributed import current, launch
from helper.errors import KDZooError, run_cli
from helper.logger import RunLogger
from helper.loop import Trainer
from helper.objective import SupervisedObjective
from helper.online import OnlineLogger, OnlineObjective, OnlineRunFiles, online_run_name
from helper.run_files import RunFiles
from helper.runtime import memory_format
from helper.setup import count_parameters, devices_and_data, seed_for_run, sgd, synchronise_batchnorm
from models.lmcl import PeerSet, baseline_model, peer_models
from models.registry import build_model

# The L-MCL repo's recipe, used for every flag left unset.
LMCL_RECIPE = dict(epochs=300, batch_size=128, learning_rate=0.1, weight_decay=5e-4, lr_decay='cos',
                   lr_decay_epochs='150,225')
LR_TYPES = {'cosine': 'cos', 'multistep': 'step'}


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
    spell.add_argument('--weight-decay', dest='weight_decay', type=float, help='= --weight_decay (default 5e-4)')
    spell.add_argument('--lr-type', choices=sorted(LR_TYPES), default=None,
                       help="'cosine' (default) or 'multistep' (x0.1 at --milestones); = --lr_decay cos|step")
    spell.add_argument('--milestones', type=int, nargs='+', default=None, help='= --lr_decay_epochs (150 225)')
    spell.add_argument('--manual_seed', dest='seed', type=int, help='= --seed')
    spell.add_argument('--gpu-id', dest='gpu_id', help='= --gpu_id')

    net = parser.add_argument_group('networks')
    net.add_argument('--arch', default='lmcl_resnet32_cifar',
                     help="an L-MCL name (lmcl_resnet32_cifar, lmcl_shufflev2_res110_cifar, ...), or with "
                          "--baseline one network (resnet32_cifar, or any zoo name)")
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
    args = parser.parse_args(argv)
    return check_args(args)


def check_args(args):
    """Models, L-MCL defaults and values, then the shared checks of resolve_common_args."""
    if args.dataset == 'imagenet':
        raise KDZooError("train_online_mcl.py trains on the 32x32 data sets (cifar100, digits); the ImageNet "
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
    args.lr_note = (f"lr {args.learning_rate} ({'cosine' if args.lr_decay == 'cos' else 'step'} decay), "
                    f"Nesterov SGD, weight decay {args.weight_decay}, batch {args.batch_size}")
    return args


def nesterov_sgd(modules, args):
    """The L-MCL repo's optimiser: SGD with Nesterov momentum, whether or not --nesterov was given."""
    args.nesterov = True
    return sgd(modules, args)


def setup(args):
    """Run files, seed, device and data; the sampler is checked before anything is written."""
    method = 'baseline' if args.baseline else ('mcl' if args.no_meta else 'lmcl')
    if args.baseline:
        name = args.peers[0]
        files = RunFiles(args.save_root, 'online', f'{name}_baseline_{args.dataset}_trial_{args.trial}', name)
    else:
        files = OnlineRunFiles(args.save_root, online_run_name(args.arch, len(args.peers), method, args.dataset,
                                                               args.trial), args.arch, args.peers)
    files.refuse_overwrite(args.resume, args.overwrite)
    resume_path = files.resume_path(args.resume, args.epochs) if args.resume else None
    seed_for_run(args, resume_path)
    device, precision, data = devices_and_data(args)
    if not args.baseline:
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


def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    method, files, resume_path, device, precision, data = setup(args)
    fmt = memory_format(precision)
    if args.baseline:
        model = build_model(args.peers[0], data.num_classes, args.dataset).to(device, memory_format=fmt)
        objective = SupervisedObjective(model)
        logger = RunLogger(files, args, count_parameters(model))
    else:
        objective = OnlineObjective(PeerSet(args.peers, data.num_classes, args.dataset), args,
                                    meta=not args.no_meta).to(device, memory_format=fmt)
        logger = OnlineLogger(files, args, count_parameters(objective.model))
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
