"""Evaluate a classification checkpoint: top-1 and top-5 on a data set's test split.

Reads checkpoints of kdzoo, RepDistiller, the SimKD repo, mdistiller (student files) and the ND repo.
The architecture comes from --model, or from the path as RepDistiller and the SimKD repo parse it.

    python tools/eval.py --path save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset import DATASETS, build_data  # noqa: E402
from helper.checkpoint import load_weights  # noqa: E402
from helper.errors import KDZooError, run_cli  # noqa: E402
from helper.loop import evaluate_predictions  # noqa: E402
from helper.runtime import memory_format, resolve_precision, select_device  # noqa: E402
from models.registry import build_model, model_name_from_path, zoo_for  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--path', help='checkpoint file')
    parser.add_argument('--model', help='architecture (default: parsed from the path)')
    parser.add_argument('--dataset', default='cifar100', choices=DATASETS)
    parser.add_argument('--data_folder', default='./data')
    parser.add_argument('--batch_size', type=int, default=256)
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
        print('\n'.join(sorted(zoo_for(args.dataset), key=str.lower)))
        return None
    if not args.path:
        raise KDZooError("no checkpoint given; pass --path <file.pth>")
    model_name = args.model or model_name_from_path(args.path)
    if model_name is None:
        raise KDZooError(f"cannot tell the architecture from '{args.path}'; pass --model")
    device = select_device(args.gpu_id)
    precision = resolve_precision(args.precision, device)
    data = build_data(args.dataset, args.data_folder, args.batch_size, device, num_workers=args.num_workers,
                      channels_last=precision != 'fp32', val_batch_size=args.batch_size)
    model = build_model(model_name, data.num_classes, args.dataset)
    load_weights(model, args.path, model_name, flag='--path')
    model.to(device, memory_format=memory_format(precision)).eval()
    top1, top5, loss = evaluate_predictions(model, data.val, device, precision)
    result = dict(path=args.path, model=model_name, dataset=args.dataset, top1=top1, top5=top5, loss=loss,
                  num_params=sum(p.numel() for p in model.parameters()))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{model_name} on {args.dataset}: top-1 {top1:.2f}%  top-5 {top5:.2f}%  "
              f"({result['num_params'] / 1e6:.2f}M parameters)")
    return result


if __name__ == '__main__':
    run_cli(main)
