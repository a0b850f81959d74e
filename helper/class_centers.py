"""The teacher's class centres for ND (distiller_zoo/ND.py, tools/nd_centers.py): the per-class mean of its pooled
embedding over the training set, computed with the training augmentation and the teacher in eval mode, and
the JSON file that keeps them beside the teacher checkpoint. The file keeps ND's layout ({"0": [...], ...},
under "centers") and records which teacher weights (a SHA-256), data set and class count they belong to,
so that centres of another teacher are refused instead of silently used (ND's scripts load resnet56's
centres whatever the teacher).
"""
import json
import os
import time

import torch
import torch.nn.functional as F

from . import distributed
from .checkpoint import atomic_write, remove_stale_temporaries
from .errors import KDZooError
from .provenance import state_dict_sha256

CENTERS_FORMAT = 'kdzoo ND class centres, version 1'
CENTERS_SUFFIX = '_center_emb_train.json'


@torch.no_grad()
def class_centers(teacher, batches, num_classes):
    """(num_classes, D) float64 on the CPU: the mean of the teacher's pooled embedding over the images of each
    class in ``batches`` (an iterable of Batch), the teacher run in eval mode. In a multi-process job each
    rank sees its share of every batch, and the sums of all ranks are added up."""
    was_training = teacher.training
    teacher.eval()
    sums = counts = None
    try:
        for batch in batches:
            embedding = teacher(batch.images, is_feat=True)[0][-1].double()
            one_hot = F.one_hot(batch.targets, num_classes).double()
            # per-class sums as a matrix product: deterministic on GPUs, unlike index_add_'s atomics
            sums = one_hot.t() @ embedding if sums is None else sums + one_hot.t() @ embedding
            counts = one_hot.sum(0) if counts is None else counts + one_hot.sum(0)
    finally:
        teacher.train(was_training)
    if sums is not None and distributed.current().enabled:
        distributed.all_reduce_patient(sums)
        distributed.all_reduce_patient(counts)
    if sums is None:
        raise KDZooError("the training set yielded no images, so the teacher's class centres cannot be computed; "
                         "check --dataset and --data_folder")
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise KDZooError(f"class {empty[0]} has no training images ({len(empty)} classes have none), so it has no "
                         f"class centre; ND needs every class in the training set")
    return (sums / counts[:, None]).cpu()


def compute_centers(teacher, train_loader, num_classes):
    """Class centres over one pass of a training loader at epoch 0: the training augmentation, from a random
    stream that no training epoch (1, 2, ...) uses."""
    train_loader.set_epoch(0)
    return class_centers(teacher, train_loader, num_classes)


def teacher_fingerprint(model):
    """SHA-256 of a network's weights and buffers (names, dtypes, shapes, values): the same for the same weights
    whatever file, device or memory layout they come from."""
    return state_dict_sha256(model.state_dict())  # the hash metrics.json records of a student's teacher


def default_centers_path(path_t):
    """``<teacher checkpoint without .pth>_center_emb_train.json``: one file per teacher checkpoint."""
    return os.path.splitext(path_t)[0] + CENTERS_SUFFIX


def centers_record(teacher, *, model, path_t, dataset, num_images, seed):
    """What a centre file says about where its centres come from."""
    exists = os.path.isfile(path_t)
    return dict(teacher=dict(model=model, path=os.path.abspath(path_t), weights_sha256=teacher_fingerprint(teacher),
                             file_size=os.path.getsize(path_t) if exists else None,
                             file_mtime=os.path.getmtime(path_t) if exists else None),
                dataset=dataset, num_images=num_images,
                augmentation=f'training augmentation, data seed {seed}, epoch 0 of the training stream',
                created=time.strftime('%Y-%m-%d %H:%M:%S'))


def write_centers(path, centers, record):
    """Write centres as JSON in ND's layout ({"0": [...], ...} under "centers") with ``record`` beside them;
    written to a temporary file and renamed, so a crash never leaves half a file."""
    content = dict(format=CENTERS_FORMAT, **record, num_classes=centers.shape[0], dim=centers.shape[1],
                   centers={str(k): row for k, row in enumerate(centers.tolist())})
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)))  # of earlier writes here that were killed
    atomic_write(path, lambda f: json.dump(content, f))


def read_centers(path):
    """(centres as a float64 (classes, D) tensor, the file's record or None for ND's own files)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError) as err:
        reason = getattr(err, 'strerror', None) or str(err).splitlines()[0][:80]
        raise KDZooError(f"cannot read the class centres in {path} ({reason}); delete the file to have them "
                         f"recomputed") from None
    ours = isinstance(content, dict) and content.get('format') == CENTERS_FORMAT
    table = content.get('centers') if ours else content
    try:
        centers = torch.tensor([table[str(k)] for k in range(len(table))], dtype=torch.float64)
    except (KeyError, TypeError, ValueError):
        raise KDZooError(f"{path} is not a class-centre file (expected {{\"0\": [...], \"1\": [...], ...}}, one "
                         f"list per class); pass the file tools/nd_centers.py writes") from None
    if centers.dim() != 2 or not torch.isfinite(centers).all() or (centers.norm(dim=1) == 0).any():
        raise KDZooError(f"the class centres in {path} are empty, ragged, not finite or zero; delete the file to "
                         f"have them recomputed")
    return centers, content if ours else None


def check_centers(path, centers, record, *, model, dataset, num_classes, dim, fingerprint):
    """Refuse centres that do not belong to this teacher and data set, with one line saying so."""
    fix = f"delete {path} to have them recomputed, or pass --centers with this teacher's file"
    if centers.shape[0] != num_classes:
        raise KDZooError(f"the class centres in {path} are for {centers.shape[0]} classes, but {dataset} has "
                         f"{num_classes}; {fix}")
    if centers.shape[1] != dim:
        raise KDZooError(f"the class centres in {path} are {centers.shape[1]}-d, but {model}'s embedding is "
                         f"{dim}-d, so they belong to another teacher; {fix}")
    if record is None:
        return
    if record.get('dataset') != dataset:
        raise KDZooError(f"the class centres in {path} were computed on {record.get('dataset')}, not {dataset}; "
                         f"{fix}")
    theirs = record.get('teacher', {})
    if theirs.get('weights_sha256') != fingerprint:
        raise KDZooError(f"the class centres in {path} were computed for other {theirs.get('model')} weights "
                         f"({theirs.get('path')}), not this {model} teacher; {fix}")


def centers_for_run(args, teacher, data, num_classes, dim):
    """The teacher's class centres: read from --centers (default: beside the teacher checkpoint) and checked,
    or computed over the training set and written there when the file does not exist. In a multi-process
    job every rank takes rank 0's branch (the file is on the same file system as --path_t, which every rank
    reads), they compute the centres together, and rank 0 writes them."""
    path = getattr(args, 'centers', None) or default_centers_path(args.path_t)
    if distributed.broadcast_object(os.path.exists(path)):
        centers, record = read_centers(path)
        check_centers(path, centers, record, model=args.model_t, dataset=args.dataset, num_classes=num_classes,
                      dim=dim, fingerprint=teacher_fingerprint(teacher) if record else None)
        unchecked = '' if record else " (ND's format: the teacher they come from cannot be checked)"
        print(f"ND: class centres of teacher {args.model_t} read from {path}{unchecked}")
        return centers
    if data is None:
        raise KDZooError(f"ND needs the teacher's class centres, but {path} does not exist and there is no training "
                         f"data to compute them from; run python tools/nd_centers.py --path_t {args.path_t}")
    print(f"ND: {path} does not exist; computing the class centres of teacher {args.model_t} over the "
          f"{args.dataset} training set (training augmentation, teacher in eval mode)")
    centers = compute_centers(teacher, data.train, num_classes)
    if not distributed.current().is_main:
        return centers
    record = centers_record(teacher, model=args.model_t, path_t=args.path_t, dataset=args.dataset,
                            num_images=data.num_train, seed=getattr(data.train, 'seed', None))
    try:
        write_centers(path, centers, record)
        print(f"ND: class centres written to {path}")
    except OSError as err:
        print(f"ND: could not write {path} ({err.strerror or err}); the centres are used without being saved")
    return centers
