"""Evaluate a classification checkpoint: top-1 and top-5 on a data set's test split.

Reads checkpoints of kdzoo, RepDistiller, the SimKD repo, mdistiller (``student_*`` files, and the student part
of its whole-distiller ``latest``/``best``/``epoch_N`` files) and the ND repo.
The architecture comes from --model, or from the path as RepDistiller and the SimKD repo parse it.
A ``<student>_deploy.pth`` (SimKD, NORM) is rebuilt from its own description, with no teacher; a SimKD
student checkpoint (``model`` + ``proj``) is evaluated with its teacher's classifier (--path_t).

    python tools/eval.py --path save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth
    python tools/eval.py -m resnet8x4 -c output/dkd,res32x4,res8x4/student_best -d cifar100 -bs 64  # mdistiller's flags
"""
import argparse
import json
import os

from dataset import DATASETS, build_data
from helper.checkpoint import load_checkpoint
from models.weights import load_weights
from helper.errors import KDZooError, run_cli
from engine.loop import evaluate_predictions
from helper.runtime import memory_format, resolve_precision, select_device
from distiller_zoo.deploy import load_deployed, require_simkd_teacher, simkd_from_checkpoint
from helper.run_files import teacher_run_name
from models.registry import ALIASES, build_model, canonical_name, model_name_from_path, zoo_for


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # -m/-c/-d/-bs are mdistiller's (and NTCE-KD's) spellings of --model/--path/--dataset/--batch_size.
    parser.add_argument('--path', '-c', '--ckpt', dest='path',
                        help="checkpoint file; 'pretrain' (mdistiller's default) or none with --model: the "
                             "teacher in save/teachers/models/ (train_teacher.py or scripts/fetch_teachers.sh)")
    parser.add_argument('--model', '-m', help='architecture (default: parsed from the path)')
    parser.add_argument('--dataset', '-d', default=None, choices=DATASETS,
                        help='default: cifar100, or the data set a <student>_deploy.pth was trained on')
    parser.add_argument('--path_t', '--path-t', dest='path_t', default=None,
                        help="teacher of a SimKD student checkpoint (one with 'proj'): predict as its run validated")
    parser.add_argument('--model_t', default=None, help='architecture of --path_t (default: parsed from it)')
    parser.add_argument('--data_folder', default='./data')
    parser.add_argument('--batch_size', '-bs', '--batch-size', dest='batch_size', type=int, default=256)
    parser.add_argument('--save_root', default='./save', help="where 'pretrain' looks for the teacher")
    parser.add_argument('--num_workers', type=int, default=8)
    parser.add_argument('--gpu_id', default='0')
    parser.add_argument('--precision', choices=('auto', 'bf16', 'fp16', 'fp32'), default='auto',
                        help='as in training, so the numbers agree with the run\'s own validation')
    parser.add_argument('--json', action='store_true', help='print the result as one JSON line')
    parser.add_argument('--list-models', action='store_true', help='list the known architectures and exit')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.list_models:
        print('\n'.join(sorted((n for n in zoo_for(args.dataset) if n not in ALIASES), key=str.lower)))
        return None
    if args.model:
        args.model = canonical_name(args.model)
    if args.path in (None, 'pretrain') and args.model:
        args.path = published_teacher_path(args)
    if not args.path:
        raise KDZooError("no checkpoint given; pass --path <file.pth>")
    checkpoint = load_checkpoint(args.path, '--path')
    deploy = checkpoint.get('deploy') if isinstance(checkpoint, dict) else None
    model_name = deploy['model'] if deploy else args.model or model_name_from_path(args.path)
    if model_name is None:
        raise KDZooError(f"cannot tell the architecture from '{args.path}'; pass --model")
    dataset = args.dataset or (deploy['dataset'] if deploy else 'cifar100')
    simkd = not deploy and isinstance(checkpoint, dict) and 'proj' in checkpoint
    if simkd:
        require_simkd_teacher(args.path, args.path_t)
    device = select_device(args.gpu_id)
    precision = resolve_precision(args.precision, device)
    data = build_data(dataset, args.data_folder, args.batch_size, device, num_workers=args.num_workers,
                      channels_last=precision != 'fp32', val_batch_size=args.batch_size)
    label = model_name
    if deploy:
        model = load_deployed(checkpoint, args.path, data.num_classes)
        label += f" ({deploy['kind']}, deployed)"
    else:
        model = build_model(model_name, data.num_classes, dataset)
        load_weights(model, args.path, model_name, flag='--path')
        if simkd:
            model = simkd_from_checkpoint(model, checkpoint['proj'], args.path, args.path_t, args.model_t, dataset)
            label += " (SimKD: projector and the teacher's classifier)"
    model.to(device, memory_format=memory_format(precision)).eval()
    top1, top5, loss = evaluate_predictions(model, data.val, device, precision)
    result = dict(path=args.path, model=model_name, dataset=dataset, top1=top1, top5=top5, loss=loss,
                  num_params=sum(p.numel() for p in model.parameters()))
    if args.json:
        print(json.dumps(result))
    else:
        trained = deploy.get('num_params_trained') if deploy else None
        if trained:
            result['num_params_trained'] = trained
        sizes = f"{result['num_params'] / 1e6:.2f}M parameters" + (
            f"; {trained / 1e6:.2f}M as trained, before folding" if trained else '')
        print(f"{label} on {dataset}: top-1 {top1:.2f}%  top-5 {top5:.2f}%  ({sizes})")
    return result


def published_teacher_path(args):
    """mdistiller's ``eval.py -m resnet32x4`` evaluates its published teacher; here the teacher in kdzoo's
    layout, where train_teacher.py (--trial 0) and scripts/fetch_teachers.sh put it."""
    dataset = args.dataset or 'cifar100'
    folder = os.path.join(args.save_root, 'teachers', 'models', teacher_run_name(args.model, dataset, '0'))
    path = os.path.join(folder, f'{args.model}_best.pth')
    if not os.path.isfile(path):
        raise KDZooError(f"no checkpoint given and no {args.model} teacher at '{path}'; pass -c <file>, fetch "
                         f"the published teachers with `bash scripts/fetch_teachers.sh`, or train one with "
                         f"train_teacher.py --model {args.model}" + (f" --dataset {dataset}" if dataset != 'cifar100'
                                                                     else ''))
    return path


if __name__ == '__main__':
    run_cli(main)
