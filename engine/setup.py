"""Steps every training script takes before its loop: seed, device, data, optimiser, resume."""
import argparse

import torch

from dataset import build_data
from helper import distributed, sync_bn
from helper.checkpoint import load_checkpoint
from helper.provenance import provenance
from helper.schedule import sgd  # noqa: F401  (engine.setup.sgd: the scripts' and benches' import)
from helper.runtime import draw_seed, memory_format, resolve_precision, seed_everything, select_device


def run_seed(seed, deterministic, resume_path=None):
    """The run's seed: ``seed`` (--seed), else the resumed run's own (so its data order replays), else a fresh
    one; seeded. Every rank of a multi-process job takes rank 0's, so all draw the same initial weights and
    data order. The parsed arguments are not written: the seed goes into the run's RunRecord."""
    if seed is None and resume_path:
        seed = recorded_seed(resume_path)
    if seed is None:
        seed = draw_seed()
    seed = distributed.broadcast_object(seed)
    seed_everything(seed, deterministic)
    return seed


def recorded_seed(path):
    """The seed a checkpoint's ``opt`` holds (None if it holds none)."""
    checkpoint = load_checkpoint(path, '--resume checkpoint')
    opt = checkpoint.get('opt') if isinstance(checkpoint, dict) else None
    opt = vars(opt) if isinstance(opt, argparse.Namespace) else opt  # RepDistiller stores a Namespace
    return opt.get('seed') if isinstance(opt, dict) else None


def devices_and_data(args, seed, **data_options):
    """The device, the precision and the data drawn with ``seed`` (the run's, ``RunRecord.seed``); in a
    multi-process job the process's own device and its share of every global batch (and of the validation
    set). ``data_options`` are a method's (``Distiller.data_options``: contrast rows, the strong view,
    drop_last), handed to build_data whole."""
    job = distributed.current()
    device = torch.device(job.device) if job.enabled else select_device(args.gpu_id)
    precision = resolve_precision(args.precision, device)
    # The SimKD repo's split of the loader processes over the node's GPUs.
    num_workers = -(-args.num_workers // job.local_size)
    data = build_data(args.dataset, args.data_folder, args.batch_size, device,
                      num_workers=num_workers, seed=seed, channels_last=precision != 'fp32', dali=args.dali,
                      rank=job.rank, world_size=job.world_size, **data_options)
    return device, precision, data


def run_provenance(device, precision, data, teacher=None):
    """What this run computes with (helper/provenance.py): for metrics.json, the checkpoints and log.txt."""
    return provenance(device, precision, resolve_precision('auto', device), memory_format(precision), data,
                      teacher=teacher, processes=distributed.current().world_size)


def resolved_defaults(parse, identity):
    """The arguments a script resolves from ``identity`` alone (its networks and data set): the defaults a run
    is compared with to label it and to name its folder. ``parse`` is the script's own parsing."""
    return {k: v for k, v in vars(parse(identity)).items()
            if isinstance(v, (int, float, str, bool, type(None), list, tuple))}


def synchronise_batchnorm(objective, args, device):
    """--sync-bn in a multi-process job: the trained modules' BatchNorm layers normalise over the global
    batch. Call it before the optimiser is built (the layers get new parameter objects)."""
    if args.sync_bn and distributed.current().enabled:
        for module in objective.trainable_modules():
            sync_bn.convert_sync_batchnorm(module, device)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())
