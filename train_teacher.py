"""Train a network from scratch with cross-entropy: the teachers (and student baselines) of every table.

    python train_teacher.py --model resnet32x4
    python train_teacher.py --model resnet8 --dataset digits --epochs 15     # built-in data, CPU demo
    python train_teacher.py --model ResNet18 --dataset imagenet --gpu_id 0,1,2,3 --multiprocessing-distributed \
        --dist-url tcp://127.0.0.1:23333 --dali gpu                          # the SimKD repo's ImageNet command
"""
from engine.args import parser_for, resolve_common_args
from engine.launch import launch
from engine.objective import SupervisedObjective
from engine.run import RunSpec, run
from engine.setup import resolved_defaults
from helper.console import logged
from helper.errors import run_cli
from helper.run_files import RunFiles, teacher_run_name
from helper.runtime import memory_format
from models.registry import build_model, check_model_name


def parse_args(argv=None):
    """The run's arguments, plus ``run_defaults``: what the same model and data set resolve to alone."""
    parser = parser_for(__doc__.splitlines()[0])
    parser.add_argument('--model', type=str, default='resnet110', help='architecture, e.g. resnet32x4')

    def parse(argv):
        args = parser.parse_args(argv)
        args.model = check_model_name(args.model, args.dataset)
        return resolve_common_args(args, args.model)
    args = parse(argv)
    args.run_defaults = resolved_defaults(parse, ['--model', args.model, '--dataset', args.dataset])
    return args


def main(argv=None):
    """Parse, then train here or in one process per GPU (--multiprocessing-distributed, torchrun)."""
    return launch(parse_args(argv), train)


@logged
def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    return run(args, RunSpec(run_files(args), build, announce, summary))


def run_files(args):
    """The run's folder: save/teachers/models/<model>_vanilla[_<dataset>_trial_<trial>]."""
    return RunFiles(args.save_root, 'teachers', teacher_run_name(args.model, args.dataset, args.trial), args.model)


def build(ctx):
    model = build_model(ctx.args.model, ctx.data.num_classes, ctx.args.dataset)
    return SupervisedObjective(model.to(ctx.device, memory_format=memory_format(ctx.precision)))


def announce(ctx):
    args, data = ctx.args, ctx.data
    return (f"{args.model}: {ctx.num_params / 1e6:.2f}M parameters; {args.dataset} ({data.num_train} training "
            f"images, {data.num_classes} classes); {ctx.device.type}, {ctx.precision}; {args.lr_note}; seed "
            f"{ctx.seed}")


def summary(ctx, state):
    last = state['history'][-1]
    return (f"teacher {ctx.args.model}: last top-1 {last['val_top1']:.2f}% (top-5 {last['val_top5']:.2f}%), best "
            f"top-1 {state['best_acc']:.2f}% at epoch {state['best_epoch']}; saved in {ctx.files.folder}")


if __name__ == '__main__':
    run_cli(main)
