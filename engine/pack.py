"""Packed distillation: one process trains several students from one teacher, one teacher pass per batch.

    python train_student.py --path_t <teacher> --model_s resnet8x4 --distill kd,crd,dkd,simkd --trial 0
    python train_student.py --path_t <teacher> --model_s resnet8x4,vgg8 --distill kd:r=0.1:a=0.9,simkd:f=4

A *member* is ``method[:flag[=value]...]``: its flags are those of a single run, written without dashes
(one letter: ``-x``, else ``--name``; no value: a switch), added after the shared command line, so each
member's arguments are exactly those its single run would parse (``engine.pack_args``, which also refuses
what members cannot share), with its method's published defaults. ``--model_s`` gives one student for all,
or one per member. This module runs the pack.

Why a member's result is its single run's, bit for bit on the CPU with --deterministic:
- data: every random draw of a loader comes from its own stream keyed by (seed, epoch, stream)
  (dataset/batches.py), so a loader that also draws CRD rows or the strong view yields the same images,
  crops and flips. The pack builds one loader with the union of the members' options and hands each
  member its view of every batch (``MemberLoader``): the rows and views it asked for, nothing else, and
  the steps its single run takes (a member with drop_last, SemCKD, stops before a last short batch).
  Members whose CRD rows differ (another --nce_k or --mode) would need another draw: they are refused.
- teacher: one pass per batch with features if any member reads them (the logits are the same with or
  without, in eval mode), the pre-ReLU pass only if a member reads pre-ReLU maps, the strong view only
  if a member reads it (``SharedTeacher``); each member gets what ``run_teacher`` would give it.
- everything else is the member's own: student, method modules, optimiser, files, and its own global
  random state (``RandomState``): each member is built from the state a single run has after loading
  the teacher, and its state is swapped in around everything it does (dropout, CRD's sampling).

A member whose loss goes non-finite stops (its metrics.json says so) and the others go on; the pack
then exits with one line naming it. --resume auto resumes every member from its own checkpoint, once that
checkpoint is found to fit the member (as a single run's --resume: models.weights.check_resume_fits).
"""
import contextlib
import dataclasses
import os
import random

import numpy as np
import torch

from helper.recipe import schedule_note
from distiller_zoo.teacher import run_teacher, served_output, shared_passes
from engine.pack_args import shared_data_options
from engine.run import RunContext, main_stage_trainer, open_logger
from engine.setup import count_parameters, devices_and_data, recorded_seed, run_seed, synchronise_batchnorm
from engine.student import (build_objective, examine_teacher, export_deployable, init_stage_trainer, load_teacher,
                            student_files, teacher_file, training_summary)
from helper import distributed, signals
from helper.checkpoint import check_file
from helper.errors import DiskFullError, KDZooError, NonFiniteLossError
from helper.provenance import RunRecord
from helper.run_files import refuse_finished
from helper.runtime import autocast, memory_format
from models.weights import check_resume_fits

# ---- what the members share ---------------------------------------------------------------------------
class SharedTeacher:
    """The teacher's outputs for the current batch, computed once for every member that reads them.

    ``compute`` runs the union of the requests, ``shared_passes`` of them (distiller_zoo/teacher.py): per
    input, one pass with features if any member reads them (else logits only) and a second with pre-ReLU
    maps only if some member reads those; each extra view once; nothing for requests that are not
    ``needed``. Every pass is ``run_teacher``'s, the function a single run calls, so
    ``outputs(batch, request)`` is what ``run_teacher(teacher, batch, request)`` would return."""

    def __init__(self, teacher):
        self.teacher = teacher
        self.passes = 0  # teacher forwards so far (the bench reads it)
        self.clear()

    def clear(self):
        self._images, self._passes, self._outputs = None, [], []

    def compute(self, batch, requests):
        self._passes = shared_passes(requests)
        self._outputs = [run_teacher(self.teacher, batch, request) for request in self._passes]
        self.passes += sum(1 + len(request.views) for request in self._passes)
        self._images = batch.images

    def outputs(self, batch, request):
        if batch.images is not self._images:
            raise RuntimeError("SharedTeacher.outputs asked for a batch it has not computed")
        return served_output(request, self._passes, self._outputs)


def _needed(request):
    return getattr(request, 'needed', True)


class MemberLoader:
    """One member's view of the pack's training loader: its batches as its single run's loader yields
    them (CRD rows and the strong view only if it reads them) and its number of steps."""

    def __init__(self, loader, steps, contrast, strong):
        self.loader, self.steps, self.contrast, self.strong = loader, steps, contrast, strong

    def __getattr__(self, name):  # seed, batch_size ... of the loader
        if name == 'loader':  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __len__(self):
        return self.steps

    def project(self, batch):
        drop = {}
        if not self.contrast and batch.contrast_idx is not None:
            drop['contrast_idx'] = None
        if not self.strong and batch.images_strong is not None:
            drop['images_strong'] = None
        return dataclasses.replace(batch, **drop) if drop else batch

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if step == self.steps:
                return
            yield self.project(batch)


class RandomState:
    """The global random generators a member's single run would own (torch's CPU one and its device's,
    Python's, NumPy's), swapped in around everything the member does."""

    def __init__(self, device):
        self.device = device
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == 'cuda' else None
        self.python = random.getstate()
        self.numpy = np.random.get_state()

    def restore(self):
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        random.setstate(self.python)
        np.random.set_state(self.numpy)


class Member:
    def __init__(self, label, args, reads):
        self.label, self.args = label, args
        self.contrast, self.strong, self.drop_last = reads
        self.files = student_files(args)
        self.resume_path = None
        self.finished = False   # already trained all its epochs (found by --resume auto)
        self.stopped = None     # the error that stopped it
        self.objective = self.logger = self.data = self.random = None
        self.ctx = None         # its run (engine/run.RunContext), once the pack's RunRecord is built
        self.trainers = {}      # stage -> Trainer

    @contextlib.contextmanager
    def own_random_state(self):
        self.random.restore()
        try:
            yield
        finally:
            self.random = RandomState(self.random.device)

    @contextlib.contextmanager
    def errors_named(self):
        try:
            yield
        except KDZooError as err:
            if str(err).startswith('pack member'):
                raise
            raise type(err)(f"pack member '{self.label}': {err}") from None


# ---- the run --------------------------------------------------------------------------------------
def train_pack(pack):
    """One process's share of a pack: every member's run, one shared loader and teacher pass per batch.
    Returns {label: final state}; raises one line naming the members that stopped. The steps are those of
    a single run (engine/run.py), member by member where a member's differ; the run's RunRecord (seed,
    teacher hash and top-1) is one for all members."""
    job = distributed.current()
    union, reads = shared_data_options(pack.members, pack.labels)
    members = [Member(label, args, read) for label, args, read in zip(pack.labels, pack.members, reads)]
    find_checkpoints(pack, members)
    todo = [m for m in members if not m.finished]
    seed = seed_pack(pack, members)
    check_file(pack.path_t, '--path_t')
    device, precision, data = devices_and_data(pack, seed=seed, **union)
    teacher = load_teacher(pack, data.num_classes, device, memory_format(precision))
    shared = SharedTeacher(teacher)
    after_teacher = RandomState(device)  # a single run's global random state once the teacher is built
    for m in todo:
        build_member(m, data, union, after_teacher, shared, device, precision)
        if m.resume_path:  # a checkpoint of another network or method: one line before any folder is made
            with m.errors_named():
                check_resume_fits(m.objective, m.resume_path, m.files.model_name)
        print(f"[{m.label}] student {m.args.model_s} ({count_parameters(m.objective.model) / 1e6:.2f}M "
              f"parameters) by {m.args.distill}; {m.args.weights_note}; {m.args.lr_note}"
              f"{'; ' + schedule_note(m.args) if schedule_note(m.args) else ''}")
    requests = [m.objective.teacher_request() for m in todo]
    print(f"pack of {len(todo)} students <- teacher {pack.model_t}; {pack.dataset}; {device.type}, {precision}; "
          f"seed {seed}; one teacher pass per batch{describe(requests)}")
    record = RunRecord(seed, **examine_teacher(teacher, data, device, precision, pack.model_t, pack.dataset,
                                               validate=not pack.skip_validation))
    for m in todo:  # each member is a single run (engine/run.py) from here on
        m.ctx = RunContext(m.args, m.files, m.resume_path, seed, device, precision, m.data, m.objective,
                           count_parameters(m.objective.model), record)
        m.logger = open_logger(m.ctx, teacher=teacher_file(m.args.path_t, m.args.model_t, record), label=m.label)
    if job.is_main:  # the other ranks of a job write nothing
        for m in todo:
            with m.errors_named():
                m.files.create()

    for m in todo:
        with m.errors_named():
            trainer = init_stage_trainer(m.ctx)
        if trainer is not None:
            m.trainers['init'] = trainer
    run_stage('init', [m for m in todo if 'init' in m.trainers], data.train, shared, device, precision)
    for m in todo:
        if m.stopped is None:
            with m.errors_named():
                m.trainers['main'] = main_stage_trainer(m.ctx)

    def closing(m):
        """The member's closing writes, before its 'finished' (so that --resume auto redoes them after a kill)."""
        return lambda state: export_deployable(m.objective, m.files, state, m.logger.provenance)

    def finished(m):
        print(f"[{m.label}] {training_summary(m.files, m.trainers['main'].state)}")
    run_stage('main', [m for m in todo if 'main' in m.trainers], data.train, shared, device, precision, finished,
              closing)
    stopped = [m for m in todo if m.stopped is not None]
    if stopped:
        raise NonFiniteLossError(f"{len(stopped)} of {len(todo)} pack members stopped on a non-finite loss "
                                 f"({'; '.join(f'{m.label}: {m.stopped}' for m in stopped)}); the others finished")
    return {m.label: m.trainers['main'].state for m in todo}


def build_member(m, data, union, random_state, shared, device, precision):
    """The member's view of the data and its objective (student, method modules) on the shared teacher,
    built from ``random_state``: the global random state a single run has once its teacher is loaded."""
    steps = len(data.train)
    if m.drop_last and not union.get('drop_last'):
        steps = min(steps, data.num_train // m.args.batch_size)
    m.data = dataclasses.replace(data, train=MemberLoader(data.train, steps, m.contrast, m.strong))
    m.random = random_state
    with m.own_random_state(), m.errors_named():
        m.objective = build_objective(m.args, m.data, device, precision, teacher=shared.teacher,
                                      teacher_source=shared.outputs)
        synchronise_batchnorm(m.objective, m.args, device)


def pack_step(running, stage, batch, epoch, step, shared, device, precision, progress):
    """One batch of the pack: the teacher once for every running member, then each member's step on its
    view of the batch, under its own random state. A member whose loss went non-finite is marked stopped."""
    requests = [m.trainers[stage].objective.teacher_request() for m in running]
    with autocast(device, precision):
        shared.compute(batch, requests)
    for m in running:
        with m.own_random_state():
            try:
                m.trainers[stage].train_step(m.data.train.project(batch), epoch, step, progress)
            except NonFiniteLossError as err:
                m.stopped = str(err)
                progress.write(f"[{m.label}] stopped: {err}")
    shared.clear()


def describe(requests):
    requests = [r for r in requests if _needed(r)]
    parts = []
    if any(r.feats and not r.preact for r in requests):
        parts.append('features')
    if any(r.feats and r.preact for r in requests):
        parts.append('pre-ReLU features (a second pass)')
    parts += [f"the '{view}' view" for view in sorted({v for r in requests for v in r.views})]
    return f" ({', '.join(parts)})" if parts else ' (logits)'


def find_checkpoints(pack, members):
    """Refuse to write over runs; with --resume auto, each member's own checkpoint (none: it starts afresh;
    all its epochs done: it is skipped)."""
    for m in members:
        with m.errors_named():
            m.files.refuse_overwrite(pack.resume, pack.overwrite)
    if not pack.resume:
        return
    for m in members:
        for path in (m.files.last, m.files.stage_checkpoint('init')):
            if distributed.broadcast_object(os.path.isfile(path)):
                m.resume_path = path
                break
    if not any(m.resume_path for m in members):
        raise KDZooError(f"--resume auto found no checkpoint of any pack member (e.g. '{members[0].files.last}'); "
                         f"start the pack without --resume")
    for m in members:
        if m.resume_path == m.files.last:
            try:  # a member that trained every epoch but stopped before its closing writes is finished then
                refuse_finished(m.resume_path, m.args.epochs)
            except KDZooError as err:
                m.finished = True
                print(f"[{m.label}] {err}; skipped")
        elif m.resume_path is None:
            print(f"[{m.label}] no checkpoint in {m.files.folder}; starts afresh")
    if all(m.finished for m in members):
        raise KDZooError("every member of the pack already finished its epochs; nothing to resume (pass a larger "
                         "--epochs to train on)")


def seed_pack(pack, members):
    """One seed for every member (the data are drawn once): --seed, else the one the resumed members'
    checkpoints hold, else a fresh one; seeded as a single run seeds (``run_seed``), and returned."""
    seed = pack.seed
    if seed is None:
        seeds = {recorded_seed(m.resume_path) for m in members if m.resume_path} - {None}
        if len(seeds) > 1:
            raise KDZooError(f"the pack members' checkpoints were trained with different seeds ({sorted(seeds)}); a "
                             f"pack draws one data order, so resume them separately or pass --seed")
        seed = seeds.pop() if seeds else None
    return run_seed(seed, pack.deterministic)


def run_stage(stage, members, loader, shared, device, precision, on_finish=None, closing=None):
    """Train ``members``' Trainers of ``stage`` together: per epoch, each member that is due begins its
    epoch, then every batch is drawn once, the teacher runs once, and each member takes its step on its
    view of the batch with its own random state; then each validates and saves (Trainer.end_epoch)."""
    if not members:
        return
    trainers = {m: m.trainers[stage] for m in members}
    for trainer in trainers.values():
        trainer.sync_ranks()
    first = min(t.state['epoch'] for t in trainers.values()) + 1
    last = max(t.epochs for t in trainers.values())
    total = sum(max(t.epochs - t.state['epoch'], 0) * len(t.data.train) for t in trainers.values())
    progress = next(iter(trainers.values())).progress_bar(total)
    try:
        with stopping_together(members, trainers):
            run_epochs(members, trainers, loader, shared, device, precision, progress, first, last, stage,
                       on_finish, closing)
    finally:
        progress.close()


@contextlib.contextmanager
def stopping_together(members, trainers):
    """A stop signal or a full disk ends every member of the pack still training: each records it as its
    single run would (``Trainer.stopping``), and one line names, member by member, where its last complete
    epoch is. Other errors pass through as they are."""
    try:
        yield
    except (KeyboardInterrupt, Exception) as first:
        if not isinstance(first, (KeyboardInterrupt, DiskFullError)) and signals.received() is None:
            raise
        ends = []
        for m in members:
            if m.stopped is not None:
                continue  # it stopped on a non-finite loss, which its metrics.json keeps saying
            try:
                with trainers[m].stopping():
                    raise first
            except (signals.Interrupted, DiskFullError) as end:
                ends.append((m.label, end))
        if not ends:
            raise
        if isinstance(first, DiskFullError):
            cause = f"{first}; "
            raise DiskFullError(cause + '; '.join(f"{label}: {str(end).removeprefix(cause)}"
                                                  for label, end in ends)) from None
        details = [(label, end.detail) for label, end in ends]
        go_on = '; continue with --resume auto'
        if all(detail.endswith(go_on) for _, detail in details):
            detail = '; '.join(f"{label}: {d.removesuffix(go_on)}" for label, d in details) + go_on
        else:
            detail = '; '.join(f"{label}: {d}" for label, d in details)
        raise signals.Interrupted(ends[0][1].signum, detail) from None


def run_epochs(members, trainers, loader, shared, device, precision, progress, first, last, stage, on_finish,
               closing):
    """The epochs of ``run_stage``; a member that trained every epoch before (resumed after its last
    checkpoint) only does its closing writes."""
    def finish(m):
        trainers[m].finish(closing(m) if closing else None)
        if on_finish is not None:
            on_finish(m)
    for m in members:
        if trainers[m].state['epoch'] >= trainers[m].epochs:
            with m.own_random_state():
                finish(m)
    for epoch in range(first, last + 1):
        due = [m for m in members if m.stopped is None and trainers[m].state['epoch'] == epoch - 1
               and epoch <= trainers[m].epochs]
        if not due:
            continue
        for m in due:
            with m.own_random_state():
                trainers[m].begin_epoch(epoch)
        loader.set_epoch(epoch)
        steps = max(len(trainers[m].data.train) for m in due)
        for step, batch in enumerate(loader, 1):
            if step > steps:
                break
            running = [m for m in due if m.stopped is None and step <= len(trainers[m].data.train)]
            pack_step(running, stage, batch, epoch, step, shared, device, precision, progress)
        for m in due:
            if m.stopped is not None:
                continue
            with m.own_random_state():
                trainer = trainers[m]
                trainer.end_epoch(epoch, trainer.train_means(), progress)
                if trainer.state['epoch'] >= trainer.epochs:
                    finish(m)


__all__ = ['Member', 'MemberLoader', 'RandomState', 'SharedTeacher', 'build_member', 'pack_step', 'train_pack']
