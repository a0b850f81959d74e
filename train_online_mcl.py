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
ImageNet the ImageNet recipe of train_teacher.py), --num-branches 3, --consistency_rampup 80 (scaled by
--epochs / 300 when not given, unless --no_recipe_scaling), --kd_T 3.

Each method is one file of online/, registered by name (the contract: online/base.py); the flags select one
(online.method_name) and this script runs it, whichever it is, through the shared loop (engine/online.py).
"""

from engine.args import parser_for, resolve_common_args
from engine.launch import launch
from engine.online import OnlineObjective
from engine.run import RunSpec, run
from engine.setup import resolved_defaults
from helper.console import logged
from helper.errors import run_cli
from helper.runtime import memory_format
from helper.schedule import sgd
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


def run_files(args):
    """The run's folder and files, as the selected method names them (tools/table_cell.py reads them too)."""
    return online_method(args).run_files(args)


@logged
def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    method_cls = online_method(args)

    def build(ctx):
        objective = OnlineObjective(method_cls.build(ctx.args, ctx.data.num_classes))
        return objective.to(ctx.device, memory_format=memory_format(ctx.precision))

    return run(args, RunSpec(
        files=method_cls.run_files(args), build=build,
        prepare_data=lambda ctx: method_cls.prepare_data(ctx.args, ctx.data),  # checked before anything is written
        announce=lambda ctx: ctx.objective.method.announce(ctx.args, ctx.data, ctx.device, ctx.precision, ctx.seed),
        summary=lambda ctx, state: ctx.objective.method.summary(ctx.args, ctx.files, state),
        optimizer=lambda modules, args: sgd(modules, args, method_cls.nesterov),  # the method's declaration
        logger_class=method_cls.logger_class, summary_on_every_rank=False))


if __name__ == '__main__':
    run_cli(main)
