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

Each method is one file of online/, registered by name (the contract: online/base.py); the flags select one
(online.method_name) and this script runs it, whichever it is, through the shared loop (engine/online.py).
"""

from engine.args import parser_for, resolve_common_args
from engine.launch import launch
from engine.loop import Trainer
from engine.online import OnlineObjective
from engine.setup import devices_and_data, resolved_defaults, run_provenance, seed_for_run, synchronise_batchnorm
from helper.console import logged
from helper.distributed import current
from helper.errors import run_cli
from helper.runtime import memory_format
from online import add_online_arguments, online_method, selection_argv


def build_parser():
    """The shared flags, the L-MCL repo's spellings of them, the networks and every online method's own flags."""
    return add_online_arguments(parser_for(__doc__.splitlines()[0]))


def parse_args(argv=None):
    parser = build_parser()
    args = check_args(parser.parse_args(argv))
    args.run_defaults = resolved_defaults(lambda argv: check_args(parser.parse_args(argv)), selection_argv(args))
    return args


def check_args(args):
    """The selected method's settings (online/base.py, ``OnlineMethod.settle``), then the shared checks of
    resolve_common_args."""
    return online_method(args).settle(args, resolve_common_args)


def main(argv=None):
    """Parse, then train here or in one process per GPU (--multiprocessing-distributed, torchrun)."""
    return launch(parse_args(argv), train)


@logged
def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    method_cls = online_method(args)
    files = method_cls.run_files(args)
    files.refuse_overwrite(args.resume, args.overwrite)
    resume_path = files.resume_path(args.resume, args.epochs) if args.resume else None
    seed_for_run(args, resume_path)
    device, precision, data = devices_and_data(args)
    method_cls.prepare_data(args, data)  # checked before anything is written
    objective = OnlineObjective(method_cls.build(args, data.num_classes))
    objective.to(device, memory_format=memory_format(precision))
    method = objective.method
    logger = method.logger(files, args, run_provenance(device, precision, data))
    synchronise_batchnorm(objective, args, device)
    print(method.announce(args, data, device, precision))
    if current().is_main:  # the other ranks of a job write nothing
        files.create()
    trainer = Trainer(objective, data, method.optimizer(args), args, files, logger, device, precision)
    if resume_path:
        trainer.resume(resume_path)
    state = trainer.fit()
    if current().is_main:
        print(method.summary(args, files, state))
    return state


if __name__ == '__main__':
    run_cli(main)
