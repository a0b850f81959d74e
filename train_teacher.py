"""Train a network from scratch with cross-entropy: the teachers (and student baselines) of every table.

    python train_teacher.py --model resnet32x4
    python train_teacher.py --model resnet8 --dataset digits --epochs 15     # built-in data, CPU demo
    python train_teacher.py --model ResNet18 --dataset imagenet --gpu_id 0,1,2,3 --multiprocessing-distributed \
        --dist-url tcp://127.0.0.1:23333 --dali gpu                          # the SimKD repo's ImageNet command
"""
from engine.args import parser_for, resolve_common_args
from engine.launch import launch
from helper.console import logged
from helper.distributed import current
from helper.errors import run_cli
from helper.logger import RunLogger
from engine.loop import Trainer
from engine.objective import SupervisedObjective
from helper.run_files import RunFiles, teacher_run_name
from helper.runtime import memory_format
from engine.setup import (count_parameters, devices_and_data, resolved_defaults, run_provenance, seed_for_run, sgd,
                          synchronise_batchnorm)
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
    files = RunFiles(args.save_root, 'teachers', teacher_run_name(args.model, args.dataset, args.trial),
                     args.model)
    files.refuse_overwrite(args.resume, args.overwrite)
    resume_path = files.resume_path(args.resume, args.epochs) if args.resume else None
    seed_for_run(args, resume_path)
    device, precision, data = devices_and_data(args)

    model = build_model(args.model, data.num_classes, args.dataset)
    model = model.to(device, memory_format=memory_format(precision))
    objective = SupervisedObjective(model)
    synchronise_batchnorm(objective, args, device)
    optimizer = sgd(objective.trainable_modules(), args)
    num_params = count_parameters(model)
    print(f"{args.model}: {num_params / 1e6:.2f}M parameters; {args.dataset} ({data.num_train} training "
          f"images, {data.num_classes} classes); {device.type}, {precision}; {args.lr_note}; seed {args.seed}")

    if current().is_main:  # the other ranks of a job write nothing
        files.create()
    logger = RunLogger(files, args, num_params, provenance=run_provenance(device, precision, data))
    trainer = Trainer(objective, data, optimizer, args, files, logger, device, precision)
    if resume_path:
        trainer.resume(resume_path)
    state = trainer.fit()
    last = state['history'][-1]
    print(f"teacher {args.model}: last top-1 {last['val_top1']:.2f}% (top-5 {last['val_top5']:.2f}%), best "
          f"top-1 {state['best_acc']:.2f}% at epoch {state['best_epoch']}; saved in {files.folder}")
    return state


if __name__ == '__main__':
    run_cli(main)
