"""The command line of a pack of students (engine/pack.py runs it): one member per entry of ``--distill``
(and ``--model_s``), each member's arguments parsed as its single run's, and the checks that the members can
share one teacher, one loader and one process.
"""
import argparse
import dataclasses
import difflib
import re

from dataset.batches import ContrastSpec
from distiller_zoo import DISTILLERS
from engine.student import student_files
from helper.errors import KDZooError

# Settings the members share because the pack computes them once: the teacher, the data and its loader,
# the seed, the device and precision, the job's processes. Everything else (weights, method flags, the
# student, lr, epochs, schedule, trial, save root) may differ between members.
SHARED = ('path_t', 'model_t', 'dataset', 'data_folder', 'batch_size', 'num_workers', 'dali', 'seed',
          'deterministic', 'precision', 'gpu_id', 'resume', 'overwrite', 'skip_validation', 'print_freq',
          'multiprocessing_distributed', 'dist_url', 'dist_backend', 'world_size', 'rank', 'nproc_per_node',
          'sync_bn')
# Loader options a pack knows how to share (Distiller.data_options).
DATA_OPTIONS = ('train_sample', 'drop_last', 'strong_view')
_KEY = re.compile(r'^[A-Za-z][A-Za-z0-9_-]*$')


def is_pack(distill, model_s):
    """A list in --distill or --model_s, or member flags (``kd:r=0.1``), make a pack."""
    return ',' in distill or ':' in distill or ',' in model_s


@dataclasses.dataclass
class MemberSpec:
    text: str        # as written in --distill
    method: str
    model_s: str
    flags: list      # argv words of the member's own flags

    @property
    def label(self):
        return f'{self.model_s} {self.text}'


def split_members(distill, model_s, parser):
    """The members of ``--distill`` paired with ``--model_s``, their flags checked against ``parser``."""
    methods = [part.strip() for part in distill.split(',')]
    models = [part.strip() for part in model_s.split(',')]
    if '' in methods or '' in models:
        raise KDZooError(f"empty entry in --distill '{distill}' or --model_s '{model_s}'; separate members with "
                         f"single commas")
    if len(models) == 1:
        models = models * len(methods)
    elif len(methods) == 1:
        methods = methods * len(models)
    elif len(models) != len(methods):
        raise KDZooError(f"--model_s lists {len(models)} students and --distill {len(methods)} methods; give one "
                         f"student for all members, or one per member")
    return [member_spec(text, model, parser) for text, model in zip(methods, models)]


def member_spec(text, model_s, parser):
    written, *options = text.split(':')
    try:  # the single run's lookup: any case, mdistiller's names ('KD,DKD' packs as kd and dkd)
        method = DISTILLERS.lookup(written, '--distill')
    except KDZooError as err:
        raise KDZooError(f"pack member '{text}': {err}") from None
    flags = []
    for option in options:
        key, has_value, value = option.partition('=')
        if not _KEY.match(key):
            raise KDZooError(f"pack member '{text}': '{option}' is not flag=value (e.g. kd:r=0.1:a=0.9)")
        flag = f'-{key}' if len(key) == 1 else f'--{key}'
        words = DISTILLERS[method].rewrite_argv([flag])  # NORM's -c/-s are its --ceta/--co-sponge
        action = parser._option_string_actions.get(words[0].split('=')[0])
        if action is None:
            known = [s.lstrip('-') for s in parser._option_string_actions]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ''
            raise KDZooError(f"pack member '{text}': unknown flag '{key}'{hint}")
        if action.dest in ('distill', 'model_s'):
            raise KDZooError(f"pack member '{text}': '{key}' is given by the member list itself")
        if action.nargs == 0 and has_value:
            raise KDZooError(f"pack member '{text}': '{key}' is a switch and takes no value")
        if action.nargs != 0 and not has_value:
            raise KDZooError(f"pack member '{text}': '{key}' needs a value ({key}=...)")
        flags += [flag, value] if has_value else [flag]
    return MemberSpec(text, method, model_s, flags)


def parse_pack(argv, distill, model_s, parser, parse_single):
    """The pack's arguments: a namespace of the shared settings whose ``members`` are the members' own
    arguments (each ``parse_single`` of the shared command line, the member's method and student, then
    its flags) and ``labels`` their names; every way a pack can be wrong is one line, here."""
    specs = split_members(distill, model_s, parser)
    members = []
    for spec in specs:
        words = list(argv) + ['--distill', spec.method, '--model_s', spec.model_s] + spec.flags
        try:
            members.append(parse_single(words, parser))
        except KDZooError as err:
            raise KDZooError(f"pack member '{spec.label}': {err}") from None
    labels = [spec.label for spec in specs]
    for key in SHARED:
        values = [getattr(args, key) for args in members]
        if any(value != values[0] for value in values):
            other = next(i for i, value in enumerate(values) if value != values[0])
            raise KDZooError(f"pack members '{labels[0]}' and '{labels[other]}' differ in --{key} ({values[0]} "
                             f"and {values[other]}); the members of a pack share it, so run them in separate packs")
    if members[0].resume not in (None, 'auto'):
        raise KDZooError("a pack resumes with --resume auto (each member from its own last checkpoint), not "
                         "from one checkpoint path")
    folders = {}
    for label, args in zip(labels, members):
        folder = student_files(args).folder
        if folder in folders:
            raise KDZooError(f"pack members '{folders[folder]}' and '{label}' would both write {folder}; give one "
                             f"of them another trial (e.g. {label.split()[1]}:trial=<name>)")
        folders[folder] = label
    shared_data_options(members, labels)  # refuses loaders the members cannot share, before anything starts
    pack = argparse.Namespace(**vars(members[0]))
    pack.distill, pack.model_s = distill, model_s
    pack.members, pack.labels = members, labels
    return pack


def shared_data_options(members, labels):
    """The options of the pack's one loader (build_data) and, per member, what of it the member reads:
    (wants CRD rows, wants the strong view, stops before a last short batch)."""
    options = []
    for label, args in zip(labels, members):
        try:
            own = DISTILLERS[args.distill].data_options(args)
        except KDZooError as err:
            raise KDZooError(f"pack member '{label}': {err}") from None
        unknown = sorted(set(own) - set(DATA_OPTIONS))
        if unknown:
            raise KDZooError(f"pack member '{label}' asks the loader for '{unknown[0]}', which a pack cannot "
                             f"share; train it alone")
        options.append(own)
    specs = {}
    for label, own in zip(labels, options):
        if own.get('train_sample') is not None:
            specs.setdefault(own['train_sample'], label)
    if len(specs) > 1:
        (a, first), (b, second) = list(specs.items())[:2]
        raise KDZooError(f"pack members '{first}' and '{second}' draw different CRD contrast rows (--nce_k "
                         f"{a.k}, --mode {a.mode} against {b.k}, {b.mode}); one loader draws one set, so run "
                         f"them in separate packs")
    union = {}
    if specs:
        union['train_sample'] = next(iter(specs))
    if any(own.get('strong_view') for own in options):
        union['strong_view'] = True
    if all(own.get('drop_last') for own in options):
        union['drop_last'] = True
    reads = [(isinstance(own.get('train_sample'), ContrastSpec), bool(own.get('strong_view')),
              bool(own.get('drop_last'))) for own in options]
    return union, reads


__all__ = ['DATA_OPTIONS', 'SHARED', 'MemberSpec', 'is_pack', 'parse_pack', 'shared_data_options']
