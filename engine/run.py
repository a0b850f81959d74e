"""One training run, written once: refuse to write over a run, seed, data, objective, sync-BN, run files,
logger, stages, resume, fit, summary. A script fills a ``RunSpec`` with only what differs (its files, data
options, objective, optimiser, logger class, the lines it prints, an init stage, its closing writes) and
calls ``run(args, spec)``.

What the run finds out while running (the seed it drew or recovered, the teacher's hash and top-1) goes
into one ``RunRecord`` (helper/provenance.py), built once before anything is written; the parsed
arguments are never written into. The files merge the record into the arguments they record, under the
keys they have always had.
"""
import dataclasses
from typing import Callable, Optional

from engine.loop import Trainer
from engine.setup import count_parameters, devices_and_data, run_provenance, run_seed, sgd, synchronise_batchnorm
from helper.distributed import current
from helper.logger import RunLogger
from helper.provenance import RunRecord
from helper.run_files import RunFiles
from models.weights import check_resume_fits


@dataclasses.dataclass
class RunContext:
    """What the run has built so far; the script's hooks read it."""
    args: object
    files: RunFiles
    resume_path: Optional[str]
    seed: int
    device: object = None
    precision: str = None
    data: object = None
    objective: object = None
    num_params: int = None
    record: RunRecord = None
    logger: object = None


@dataclasses.dataclass
class RunSpec:
    """What one script's run is made of. Hooks take the ``RunContext``."""
    files: RunFiles                                   # the run's folder (its class: the script's own)
    build: Callable                                   # ctx -> the Objective, on ctx.device
    announce: Callable                                # ctx -> the line saying what trains
    summary: Callable                                 # (ctx, final state) -> the closing line
    data_options: dict = dataclasses.field(default_factory=dict)  # a method's (Distiller.data_options)
    prepare_data: Optional[Callable] = None           # ctx -> None: e.g. L-MCL's class-balanced batch order
    examine: Optional[Callable] = None                # ctx -> {RunRecord field: value} found before writing
    teacher_file: Optional[Callable] = None           # RunRecord -> the teacher's provenance record
    count: Callable = lambda objective: count_parameters(objective.model)
    optimizer: Callable = sgd                         # (modules, args) -> optimiser
    logger_class: type = RunLogger
    stages: Optional[Callable] = None                 # ctx -> [Trainer] trained before the main stage
    closing: Optional[Callable] = None                # (ctx, state) -> None: writes before 'finished'
    summary_on_every_rank: bool = True                # False: rank 0 alone prints it


def run(args, spec):
    """One process's run of ``spec``; returns the main stage's final state."""
    files = spec.files
    files.refuse_overwrite(args.resume, args.overwrite)
    resume_path = files.resume_path(args.resume, args.epochs) if args.resume else None
    ctx = RunContext(args, files, resume_path, run_seed(args.seed, args.deterministic, resume_path))
    ctx.device, ctx.precision, ctx.data = devices_and_data(args, seed=ctx.seed, **spec.data_options)
    if spec.prepare_data is not None:
        spec.prepare_data(ctx)
    ctx.objective = spec.build(ctx)
    synchronise_batchnorm(ctx.objective, args, ctx.device)  # before any optimiser: new parameter objects
    ctx.num_params = spec.count(ctx.objective)
    if resume_path:  # a checkpoint of another network or method: one line before any folder is made
        check_resume_fits(ctx.objective, resume_path, files.model_name)
    print(spec.announce(ctx))
    ctx.record = RunRecord(ctx.seed, **(spec.examine(ctx) if spec.examine is not None else {}))

    if current().is_main:  # the other ranks of a job write nothing
        files.create()
    open_logger(ctx, spec.logger_class, spec.teacher_file(ctx.record) if spec.teacher_file is not None else None)
    for trainer in (spec.stages(ctx) if spec.stages is not None else []):
        trainer.fit()
    trainer = main_stage_trainer(ctx, spec.optimizer, after_stages=spec.stages is not None)
    closing = (lambda state: spec.closing(ctx, state)) if spec.closing is not None else None
    state = trainer.fit(closing=closing)
    if spec.summary_on_every_rank or current().is_main:
        print(spec.summary(ctx, state))
    return state


def open_logger(ctx, logger_class=RunLogger, teacher=None, label=None):
    """The run's logger (``ctx.logger``), with the provenance of what it computes with; ``teacher``: the
    teacher file's record, ``label``: a pack member's."""
    provenance = run_provenance(ctx.device, ctx.precision, ctx.data, teacher)
    ctx.logger = logger_class(ctx.files, ctx.args, ctx.num_params, provenance=provenance, label=label,
                              record=ctx.record)
    return ctx.logger


def main_stage_trainer(ctx, optimizer=sgd, after_stages=True):
    """The main stage's Trainer, resumed from ``ctx.resume_path`` unless (``after_stages``: a run whose
    method may train an init stage first) that is the init stage's checkpoint, from which the init stage
    resumes and after which the main stage starts afresh."""
    trainer = Trainer(ctx.objective, ctx.data, optimizer(ctx.objective.trainable_modules(), ctx.args), ctx.args,
                      ctx.files, ctx.logger, ctx.device, ctx.precision, record=ctx.record)
    if ctx.resume_path and not (after_stages and ctx.resume_path == ctx.files.stage_checkpoint('init')):
        trainer.resume(ctx.resume_path)
    return trainer
