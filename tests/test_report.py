"""tools/report.py: a save/ folder of every kind of run becomes tables that average trials and nothing else.

The runs' metrics.json files are written by the scripts' own code (their parse_args, RunFiles, RunLogger /
OnlineLogger) with made-up accuracies, so they have exactly the format a training run writes; one real
teacher -> student run on digits checks the chain end to end (tests/test_run_records.py)."""
import json
import os
import statistics

import pytest
import torch

import train_online_mcl
import train_student
import train_teacher
from helper.errors import KDZooError
from helper.logger import RunLogger
from helper.provenance import provenance
from helper.run_files import RunFiles, teacher_run_name
from models.lmcl import NUMBER_STAGES
from online.base import online_run_name
from online.lmcl import OnlineLogger, OnlineRunFiles
from tools import report

CPU = torch.device('cpu')
SHA_A, SHA_B = 'a' * 64, 'b' * 64  # two teacher files of one architecture
TEACHER_A = 'teachers/models/resnet20_vanilla_digits_trial_0/resnet20_best.pth'
TEACHER_B = 'teachers/models/resnet20_vanilla_digits_trial_1/resnet20_best.pth'


def history(curve):
    return [dict(epoch=i + 1, lr=0.05, train_loss=1.0, train_top1=50.0, val_top1=v, val_top5=90.0, val_loss=1.0,
                 epoch_time=1.0) for i, v in enumerate(curve)]


def close(files, logger, records, status='finished', weights=None):
    """Write the run's metrics.json as the training loop does after its last epoch."""
    scores = [r['val_top1'] for r in records]
    best = scores.index(max(scores))
    state = dict(epoch=len(records), best_acc=scores[best], best_top5=90.0, best_epoch=best + 1, history=records,
                 wall_time=1.0)
    files.create()
    if status == 'finished':
        logger.finish(state, status, weights=weights)
    else:
        logger.write(state, status)
    return files.folder


def teacher_run(root, model, curve, *flags, sha=None):
    args = train_teacher.parse_args(['--model', model, '--dataset', 'digits', '--epochs', str(len(curve)),
                                     '--save_root', root, *flags])
    files = RunFiles(root, 'teachers', teacher_run_name(model, 'digits', args.trial), model)
    logger = RunLogger(files, args, 1000, tensorboard=False,
                       provenance=provenance(CPU, 'fp32', 'fp32', torch.contiguous_format))
    return close(files, logger, history(curve), weights=dict(best=sha, last=sha) if sha else None)


def student_run(root, curve, *flags, sha=SHA_A, teacher_top1=70.0, status='finished', path_t=TEACHER_A):
    args = train_student.parse_args(['--path_t', os.path.join(root, path_t), '--model_s', 'resnet8', '--dataset',
                                     'digits', '--epochs', str(len(curve)), '--save_root', root, *flags])
    args.teacher_sha256, args.teacher_top1 = sha, teacher_top1  # what load_teacher and the validation record
    files = RunFiles(root, 'students', train_student.run_name(args), 'resnet8')
    teacher = dict(path=os.path.join(root, path_t), model=args.model_t, sha256=sha)
    logger = RunLogger(files, args, 1000, tensorboard=False,
                       provenance=provenance(CPU, 'fp32', 'fp32', torch.contiguous_format, teacher=teacher))
    return close(files, logger, history(curve), status)


def online_run(root, arch, peer_curves, *flags):
    """An L-MCL/MCL run (``peer_curves``: one curve per peer, its own head) or a --baseline run."""
    epochs = len(peer_curves[0])
    args = train_online_mcl.parse_args(['--arch', arch, '--dataset', 'digits', '--epochs', str(epochs),
                                        '--save_root', root, *flags])
    prov = provenance(CPU, 'fp32', 'fp32', torch.contiguous_format)
    if args.baseline:
        files = RunFiles(root, 'online', f'{args.peers[0]}_baseline_digits_trial_{args.trial}', args.peers[0])
        return close(files, RunLogger(files, args, 1000, tensorboard=False, provenance=prov), history(peer_curves[0]))
    method = 'mcl' if args.no_meta else 'lmcl'
    files = OnlineRunFiles(root, online_run_name(arch, len(args.peers), method, 'digits', args.trial), arch, args.peers)
    records = history([statistics.mean(values) for values in zip(*peer_curves)])
    for record, epoch in zip(records, range(epochs)):
        for i, curve in enumerate(peer_curves):
            record[f'val_peer{i}_top1'], record[f'val_peer{i}_top5'] = curve[epoch], 90.0
            for k in range(1, NUMBER_STAGES):
                record[f'val_peer{i}_branch{k}_top1'] = curve[epoch] + k  # an auxiliary head that scores higher
    return close(files, OnlineLogger(files, args, 1000, tensorboard=False, provenance=prov), records)


def table(tables, kind, recipe):
    found = [t for t in tables if t.kind == kind and t.recipe == recipe]
    assert len(found) == 1, [(t.kind, t.recipe) for t in tables]
    return found[0]


def cell(t, row, column_prefix, measure='last'):
    columns = [c for c in t.columns if t.headers[c].startswith(column_prefix)]
    assert len(columns) == 1, (column_prefix, [t.headers[c] for c in t.columns])
    return [e.values[measure] for e in t.rows[row].get(columns[0], [])]


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
    """The SimKD table's -f sweep with trials, KD at two weightings, two teacher files of one architecture,
    vanilla runs of the student at two recipes, online runs of three kinds, and one unfinished run."""
    root = str(tmp_path_factory.mktemp('save'))
    for trial, last in enumerate([60.0, 62.0, 64.0]):
        student_run(root, [50.0, last], '--distill', 'simkd', '--trial', str(trial))
    for trial, last in enumerate([70.0, 72.0]):
        student_run(root, [55.0, last], '--distill', 'simkd', '-f', '8', '--trial', str(trial))
    student_run(root, [50.0, 66.0], '--distill', 'simkd', '-f', '4')
    student_run(root, [50.0, 40.0], '--distill', 'simkd', '-f', '4', '--trial', '9', status='running')
    student_run(root, [50.0, 65.0], '--distill', 'kd')
    student_run(root, [50.0, 61.0], '--distill', 'kd', '-r', '0.5', '-a', '0.5')
    # the same kd from the other teacher file of the same architecture, and at another recipe (3 epochs): their
    # folder names are kd's, so they need a --trial of their own, but they are not trials of one cell
    student_run(root, [50.0, 55.0], '--distill', 'kd', '--trial', '5', sha=SHA_B, teacher_top1=68.0,
                path_t=TEACHER_B)
    student_run(root, [50.0, 54.0, 58.0], '--distill', 'kd', '--trial', '6')
    teacher_run(root, 'resnet20', [60.0, 70.0], sha=SHA_A)
    teacher_run(root, 'resnet8', [40.0, 52.0])
    teacher_run(root, 'resnet8', [40.0, 56.0], '--trial', '1')
    teacher_run(root, 'resnet8', [40.0, 45.0, 59.0], '--trial', '2')  # vanilla student at the 3-epoch recipe
    online_run(root, 'lmcl_resnet32_cifar', [[30.0, 40.0], [32.0, 44.0]])
    online_run(root, 'lmcl_resnet32_cifar', [[30.0, 41.0], [32.0, 45.0]], '--no-meta')
    online_run(root, 'lmcl_res32_res110_cifar', [[30.0, 43.0], [35.0, 47.0]])
    online_run(root, 'resnet32_cifar', [[30.0, 39.0]], '--baseline')
    return root


def test_rows_are_methods_with_their_differing_settings_and_cells_average_trials_only(sweep, capsys):
    tables = report.main(['--save_root', sweep])
    out = capsys.readouterr().out
    students = table(tables, 'student', 'epochs=2')
    assert cell(students, 'simkd', 'resnet20 → resnet8 [teacher aaaa') == [60.0, 62.0, 64.0]
    assert cell(students, 'simkd f=8', 'resnet20 → resnet8 [teacher aaaa') == [70.0, 72.0]
    assert cell(students, 'simkd f=4', 'resnet20 → resnet8 [teacher aaaa') == [66.0]  # the running trial is out
    assert cell(students, 'kd', 'resnet20 → resnet8 [teacher aaaa') == [65.0]
    assert cell(students, 'kd a=0.5 r=0.5', 'resnet20 → resnet8 [teacher aaaa') == [61.0]
    # the other teacher file is a column of its own, with its own teacher accuracy
    assert cell(students, 'kd', 'resnet20 → resnet8 [teacher bbbb') == [55.0]
    assert cell(students, 'Teacher', 'resnet20 → resnet8 [teacher bbbb') == [68.0]
    assert cell(students, 'Teacher', 'resnet20 → resnet8 [teacher aaaa') == [70.0]
    # Student: the vanilla resnet8 runs of the 2-epoch recipe only
    assert cell(students, 'Student', 'resnet20 → resnet8 [teacher aaaa') == [52.0, 56.0]
    last_table = out.split('# Students (train_student.py): digits, epochs=2')[1].split('## Top-1 (%), best')[0]
    assert '| simkd | 62.00 ± 2.00 (3) |' in last_table
    assert '| simkd f=8 | 71.00 ± 1.41 (2) |' in last_table
    assert '| Student | 54.00 ± 2.83 (2) | 54.00 ± 2.83 (2) |' in last_table
    assert last_table.index('| Teacher |') < last_table.index('| Student |') < last_table.index('| kd |')
    assert 'teacher aaaaaaaa: ' in out and 'best weights of' in out  # the file, tied to the run that trained it
    assert 'running after 2 of 2 epochs' in out and "_f:4_9" in out
    other = table(tables, 'student', 'epochs=3')
    assert cell(other, 'kd', 'resnet20 → resnet8') == [58.0]
    assert cell(other, 'Student', 'resnet20 → resnet8') == [59.0]


def test_every_kind_has_its_table(sweep, capsys):
    tables = report.main(['--save_root', sweep])
    out = capsys.readouterr().out
    for title in ('# Trained from scratch (train_teacher.py): digits, epochs=2',
                  '# Students (train_student.py): digits, epochs=2',
                  '# Online distillation (train_online_mcl.py): digits, epochs=2',
                  '# Baselines (train_online_mcl.py --baseline): digits, epochs=2'):
        assert title in out
    scratch = table(tables, 'teacher', 'epochs=2')
    assert '| resnet8 | 54.00 ± 2.83 (2) | 54.00 ± 2.83 (2) |' in scratch.markdown('last')
    online = table(tables, 'online', 'epochs=2')
    assert cell(online, 'lmcl', 'lmcl_resnet32_cifar ×2 (resnet32)') == [42.0]  # mean of the two peers
    assert cell(online, 'mcl', 'lmcl_resnet32_cifar ×2 (resnet32)') == [43.0]
    assert cell(online, 'Baseline', 'lmcl_resnet32_cifar ×2 (resnet32)') == [39.0]
    # a heterogeneous pair: one column per peer network
    assert cell(online, 'lmcl', 'lmcl_res32_res110_cifar ×2 (resnet32)') == [43.0]
    assert cell(online, 'lmcl', 'lmcl_res32_res110_cifar ×2 (resnet110_bottleneck)') == [47.0]
    # the released code's number: best over every head (the auxiliary ones score +1, +2 here) and epoch
    assert cell(online, 'lmcl', 'lmcl_res32_res110_cifar ×2 (resnet32)', 'released') == [45.0]
    assert "best over all heads and epochs (the L-MCL code's number)" in out


def test_learning_curves_per_pair(sweep, tmp_path):
    tables = report.build_tables(report.read_runs(sweep)[0])
    students = table(tables, 'student', 'epochs=2')
    column = next(c for c in students.columns if c[2] == SHA_A)
    figure = report.curve_figure(students, column)
    ax = figure.axes[0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert 'Teacher 70.00%' in legend and 'Student 54.00%' in legend
    assert {'simkd (3 trials)', 'simkd f=8 (2 trials)', 'simkd f=4 (1 trial)', 'kd (1 trial)',
            'kd a=0.5 r=0.5 (1 trial)'} <= set(legend)
    curves = {line.get_label(): line for line in ax.get_lines()}
    assert list(curves['simkd (3 trials)'].get_ydata()) == [50.0, 62.0]  # the mean over trials per epoch
    assert curves['simkd (3 trials)'].get_marker() == 'o'  # a 2-epoch run: a marker per epoch
    assert list(curves['Teacher 70.00%'].get_ydata()) == [70.0, 70.0]  # a horizontal reference line
    bands = ax.collections  # mean ± std, only where there are two trials or more: simkd and simkd f=8
    assert len(bands) == 2
    at_epoch_2 = [sorted({round(float(y), 6) for x, y in band.get_paths()[0].vertices if x == 2})
                  for band in bands]
    assert sorted(at_epoch_2) == [[60.0, 64.0], [69.585786, 72.414214]]  # simkd 62 ± 2, simkd f=8 71 ± 1.414

    written = report.plot_tables(tables, str(tmp_path / 'curves'))
    assert len(written) == len({(t.kind, t.recipe, c) for t in tables if t.kind in ('student', 'online')
                                for c in t.columns})
    assert all(os.path.getsize(path) > 5000 for path in written)
    assert any('student_digits_resnet20_resnet8_aaaaaaaa_epochs=2' in path for path in written)


def test_plots_flag_writes_into_the_save_root(sweep, capsys):
    report.main(['--save_root', sweep, '--plots', '--dataset', 'digits'])
    out = capsys.readouterr().out
    assert f"wrote {os.path.join(sweep, 'plots')}" in out


def test_a_cell_never_averages_runs_whose_defaults_changed(tmp_path, capsys):
    """DIST's default -b was 1 and is 2: two runs 'at the defaults' of their time are two rows."""
    root = str(tmp_path)
    student_run(root, [50.0, 60.0], '--distill', 'dist')
    folder = student_run(root, [50.0, 70.0], '--distill', 'dist', '-b', '1', '--trial', '1')
    path = os.path.join(folder, 'metrics.json')
    metrics = json.load(open(path))
    metrics['run']['defaults']['beta'] = 1.0  # as an older kdzoo recorded it
    json.dump(metrics, open(path, 'w'))
    tables = report.main(['--save_root', root])
    students = tables[0]
    assert cell(students, 'dist b=1', 'resnet20') == [70.0] and cell(students, 'dist b=2', 'resnet20') == [60.0]


def test_older_metrics_without_run_records_are_still_tables(tmp_path, capsys):
    """metrics.json written before the run/provenance records: grouped by their arguments, labelled by
    what varies among them."""
    def write(name, kind, args, last):
        folder = tmp_path / kind / 'models' / name
        folder.mkdir(parents=True)
        (folder / 'metrics.json').write_text(json.dumps(dict(
            status='finished', epochs_done=2, epochs=2, last=dict(top1=last), best=dict(top1=last), args=args,
            history=[dict(epoch=1, val_top1=last - 1), dict(epoch=2, val_top1=last)])))
    pair = dict(dataset='cifar100', model_t='resnet32x4', model_s='resnet8x4', gamma=0.1, alpha=0.9, beta=0.0,
                epochs=240, kd_T=4)
    for trial, last in enumerate([73.0, 74.0, 75.0]):
        write(f'kd{trial}', 'students', dict(pair, distill='kd', trial=str(trial), seed=trial), last)
    write('kdT2', 'students', dict(pair, distill='kd', kd_T=2, trial='0'), 70.0)
    write('t', 'teachers', dict(dataset='cifar100', model='resnet32x4', trial='0', epochs=240), 79.4)
    report.main(['--save_root', str(tmp_path)])
    out = capsys.readouterr().out
    assert '| kd kd_T=4 | 74.00 ± 1.00 (3) |' in out and '| kd kd_T=2 | 70.00 |' in out
    assert '| Teacher | 79.40 |' in out


def test_packed_members_are_read_by_their_own_run_record(tmp_path, capsys):
    """A member of a packed run (one process, several students) records its own method in 'run'."""
    root = str(tmp_path)
    folder = student_run(root, [50.0, 63.0], '--distill', 'crd')
    path = os.path.join(folder, 'metrics.json')
    metrics = json.load(open(path))
    metrics['args']['distill'] = 'kd,crd'  # the pack's command line
    json.dump(metrics, open(path, 'w'))
    student_run(root, [50.0, 65.0], '--distill', 'crd', '--trial', '1')
    tables = report.main(['--save_root', root])
    assert cell(tables[0], 'crd', 'resnet20') == [63.0, 65.0]


def test_a_corrupt_metrics_file_is_named_in_one_line(sweep, tmp_path, capsys):
    root = str(tmp_path)
    student_run(root, [50.0, 60.0], '--distill', 'kd')
    broken = tmp_path / 'students' / 'models' / 'broken'
    broken.mkdir()
    (broken / 'metrics.json').write_text('{"status": "finished", "args": {')
    odd = tmp_path / 'students' / 'models' / 'odd'
    odd.mkdir()
    (odd / 'metrics.json').write_text('[1, 2]')
    tables = report.main(['--save_root', root])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"warning: {broken / 'metrics.json'}: not valid JSON (line 1") and 'left out' in err[0]
    assert err[1].startswith(f"warning: {odd / 'metrics.json'}: not a kdzoo metrics.json")
    assert cell(tables[0], 'kd', 'resnet20') == [60.0]


def test_nothing_readable_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(KDZooError, match=r"no runs \(metrics.json\) under .*; pass --save_root"):
        report.main(['--save_root', str(tmp_path)])
    folder = tmp_path / 'students' / 'models' / 'x'
    folder.mkdir(parents=True)
    (folder / 'metrics.json').write_text('not json')
    with pytest.raises(KDZooError, match='1 metrics.json could not be read'):
        report.main(['--save_root', str(tmp_path)])


def test_command_line_exit_status(tmp_path):
    from conftest import run_script
    result = run_script('tools/report.py', '--save_root', tmp_path, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: no runs (metrics.json) under '{tmp_path}'; pass "
                                                  f"--save_root"]
