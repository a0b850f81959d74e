"""Compute a teacher's class centres for ND (kd++, dkd++, dist++, reviewkd++, <method>++) ahead of training.

    python tools/nd_centers.py --path_t save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth

The centre of class k is the mean of the teacher's pooled embedding (the vector its classifier reads) over
the training images of class k, with the training augmentation and the teacher in eval mode, as ND computes
it. The result goes beside the checkpoint as <checkpoint without .pth>_center_emb_train.json (or to --out),
where train_student.py looks for it; the ++ methods compute the same file themselves when it is missing.
"""
import argparse

from dataset import DATASETS, build_data
from distiller_zoo.ND import centers_record, compute_centers, default_centers_path, write_centers
from models.weights import load_weights
from helper.checkpoint import check_file
from helper.errors import KDZooError, run_cli
from helper.runtime import select_device
from models.registry import build_model, check_model_name, model_name_from_path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--path_t', '--path-t', dest='path_t', default=None, help='teacher checkpoint')
    parser.add_argument('--model_t', default=None, help='teacher architecture (default: parsed from --path_t)')
    parser.add_argument('--dataset', default='cifar100', choices=DATASETS, help='the data set the teacher knows')
    parser.add_argument('--data_folder', default='./data')
    parser.add_argument('--batch_size', type=int, default=256)
    parser.add_argument('--num_workers', type=int, default=8, help='loader processes (ImageNet folders only)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the augmentation draws')
    parser.add_argument('--gpu_id', default='0', help='CUDA device; the CPU is used when there is none')
    parser.add_argument('--out', default=None, help='output file (default: beside the teacher checkpoint)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.path_t:
        raise KDZooError("no teacher given; pass --path_t <teacher checkpoint>")
    check_file(args.path_t, '--path_t')  # missing, or a folder: said before any data is read
    model_t = args.model_t or model_name_from_path(args.path_t)
    if model_t is None:
        raise KDZooError(f"cannot tell the teacher's architecture from '{args.path_t}'; pass --model_t")
    model_t = check_model_name(model_t, args.dataset, '--model_t')
    out = args.out or default_centers_path(args.path_t)

    device = select_device(args.gpu_id)
    data = build_data(args.dataset, args.data_folder, args.batch_size, device, num_workers=args.num_workers,
                      seed=args.seed)
    teacher = build_model(model_t, data.num_classes, args.dataset, '--model_t')
    load_weights(teacher, args.path_t, model_t, flag='--path_t')
    teacher.to(device)
    print(f"computing the class centres of {model_t} over the {args.dataset} training set ({data.num_train} "
          f"images, training augmentation, teacher in eval mode) on {device.type}")
    centers = compute_centers(teacher, data.train, data.num_classes)
    record = centers_record(teacher, model=model_t, path_t=args.path_t, dataset=args.dataset,
                            num_images=data.num_train, seed=args.seed)
    try:
        write_centers(out, centers, record)
    except OSError as err:
        raise KDZooError(f"cannot write {out} ({err.strerror or err}); pass --out with a writable path") from None
    norms = centers.norm(dim=1)
    print(f"{centers.shape[0]} class centres ({centers.shape[1]}-d, norms {norms.min():.3f} to {norms.max():.3f}) "
          f"written to {out}")
    return out


if __name__ == '__main__':
    run_cli(main)
