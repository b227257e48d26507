"""The training and evaluation commands: exact resume after real kills, data workers, two processes, damaged
checkpoints, the run-folder lock, bad input, evaluation of a run.

Tiny runs (2 epochs of 12 steps, 32 px, a checkpoint every 4 steps), one thread per process; the uninterrupted
reference runs are shared by every test of this file. Runs that are killed are real processes killed with SIGKILL
(every rank, and every data worker).
"""
import csv, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from cir_unc.cli import train_cli, eval_cli
from cir_unc.data import SyntheticConfig
from cir_unc.datasets import load_dataset

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
SIZES = dict(train_images=240, val_images=120, test_images=120, train_triplets=384, val_triplets=60, test_triplets=60)
TINY = ['--preset', 'synthetic', '--epochs', '2', '--batch-size', '32', '--warmup-epochs', '1', '--decay-epochs',
        '--no-progress', '--checkpoint-every', '4', '--device', 'cpu', '--data', f'synthetic={json.dumps(SIZES)}',
        '--data', 'image_size=32', '--model', 'cnn_widths=[16, 32, 64]', '--model', 'text_width=64']
NO_DROPOUT = ['--model', 'text_layer_dropout=0']     # dropout masks are drawn per rank: off where 2 processes meet 1
CODE = 'import sys; from cir_unc.cli import train_cli; train_cli(sys.argv[1:])'

def train_command(*args, processes: int = 1) -> list:
    "`cir_unc_train ARGS`, in one process or under torchrun (gloo on the CPU)."
    args = [str(a) for a in args]
    if processes == 1: return [sys.executable, '-c', CODE, *args]
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}', '--no-python',
            sys.executable, '-c', CODE, *args]

def run(command, timeout=300) -> subprocess.CompletedProcess:
    res = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    return res

def metrics_without_time(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != 'seconds'} for r in csv.DictReader(open(run_dir/'metrics.csv'))]

def descendants(pid: int) -> list[int]:
    "Every process below `pid` (torchrun starts its ranks in sessions of their own, so a process group is not enough)."
    parents = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try: fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError: continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), []); found += children; todo += children
    return found

def kill_at(command, line_start: str, timeout=240) -> list[str]:
    "Start `command`; when it prints a line starting with `line_start`, SIGKILL it with all its processes."
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    seen, deadline = [], time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(line_start) or time.time() > deadline: break
    for pid in [proc.pid] + descendants(proc.pid):
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass
    proc.wait()
    assert seen and seen[-1].startswith(line_start), f'never printed {line_start!r}:\n{"".join(seen)}'
    return seen

@pytest.fixture(scope='module')
def reference(tmp_path_factory) -> dict:
    "Uninterrupted runs: one process (workers 0 and 2), and one and two processes without dropout."
    tmp = tmp_path_factory.mktemp('reference')
    load_dataset('synthetic', tmp/'data', image_size=32, synthetic=SyntheticConfig(**SIZES))     # the data, once
    runs = {'one': ([], 1), 'workers': (['--workers', '2'], 1), 'one_no_dropout': (NO_DROPOUT, 1), 'two': (NO_DROPOUT, 2)}
    for batch in (['one', 'workers'], ['one_no_dropout', 'two']):                     # two at a time on two cores
        procs = [subprocess.Popen(train_command(*TINY, *runs[n][0], '--data-root', tmp/'data', '--out', tmp/n,
                                                processes=runs[n][1]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=ENV) for n in batch]
        for name, proc in zip(batch, procs):
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f'{name}:\n{out}\n{err}'
    return {'data': tmp/'data', **{n: tmp/n for n in runs}}

def test_run_directory(reference):
    run_dir = reference['one']
    for f in ('config.json', 'metrics.csv', 'last.pt', 'last.prev.pt', 'best.pt', 'results.json', 'loss_curves.png', 'recall_curves.png'):
        assert (run_dir/f).exists(), f
    rows = list(csv.DictReader(open(run_dir/'metrics.csv')))
    assert len(rows) == 2 and {'lr', 'gamma', 'loss', 'loss_u', 'loss_info', 'log_var', 'seconds'} <= set(rows[0])
    assert {'grad_ratio', 'grad_coarse', 'grad_fine', 'coef_u', 'coef_info'} <= set(rows[0])       # the mechanism, per epoch
    assert float(rows[0]['coef_info']) == pytest.approx(1 - float(rows[0]['gamma'])) and float(rows[0]['grad_ratio']) > 0
    results = json.loads((run_dir/'results.json').read_text())
    assert set(results['train_infonce']) == {'coarse', 'fine'} and all(v > 0 for v in results['train_infonce'].values())
    assert 'val/single mean R@10' in results['selected_on'] and results['best_epoch'] in (0, 1)
    assert any(k.startswith('test/') for k in results['results'])

def test_workers_do_not_change_results(reference):
    assert metrics_without_time(reference['workers']) == metrics_without_time(reference['one'])

def test_two_processes_equal_one(reference):
    "Per-epoch losses to 1e-5 (relative); every Recall@K within one query of its set (near-ties may swap)."
    evals = load_dataset('synthetic', reference['data'], image_size=32, synthetic=SyntheticConfig(**SIZES)).evals
    queries = {}
    for ev in evals:
        name = f'{ev.split}/{ev.category}/{ev.protocol}'
        queries[name] = len(ev.queries)
        for group in ('coarse', 'fine'): queries[f'{name}/{group}'] = sum(q.granularity == group for q in ev.queries)
    one, two = metrics_without_time(reference['one_no_dropout']), metrics_without_time(reference['two'])
    assert len(one) == len(two) == 2 and one[0].keys() == two[0].keys()
    for a, b in zip(one, two):
        for key in ('loss', 'loss_info', 'loss_u', 'log_var'):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
        for key in (k for k in a if '/R@' in k):
            one_query = 100 / queries[key.rsplit('/', 1)[0]]
            assert abs(float(a[key]) - float(b[key])) <= one_query + 1e-9, (key, a[key], b[key])

KILLS = {'during an epoch': 'epoch 2/2: step 4/12, checkpoint written', 'during evaluation': 'epoch 1/2: evaluating on'}

@pytest.mark.parametrize('where', list(KILLS))
@pytest.mark.parametrize('setting', ['one process, 2 workers', 'two processes'])
def test_kill_and_resume_is_exact(reference, tmp_path, where, setting):
    extra, processes, ref = ((['--workers', '2'], 1, reference['one']) if setting == 'one process, 2 workers'
                             else (NO_DROPOUT, 2, reference['two']))
    run_dir = tmp_path/'run'
    kill_at(train_command(*TINY, *extra, '--data-root', reference['data'], '--out', run_dir, processes=processes), KILLS[where])
    done = len(metrics_without_time(run_dir)) if (run_dir/'metrics.csv').exists() else 0
    assert done == (1 if where == 'during an epoch' else 0)                   # killed in epoch 2 / in epoch 1's evaluation
    res = run(train_command('--resume', '--out', run_dir, '--no-progress', '--device', 'cpu', *extra[:2], processes=processes))
    positions = ('at epoch 2, step 4', 'at epoch 2, step 8') if where == 'during an epoch' else ('at epoch 1, step 8',)
    assert 'resuming' in res.stdout and any(p in res.stdout for p in positions), res.stdout
    assert metrics_without_time(run_dir) == metrics_without_time(ref)
    results = lambda d: json.loads((d/'results.json').read_text())['results']
    assert results(run_dir) == results(ref)

def test_damaged_checkpoint_falls_back_to_the_previous(reference, tmp_path):
    run_dir = tmp_path/'run'; shutil.copytree(reference['one'], run_dir)
    whole = (run_dir/'last.pt').read_bytes()
    (run_dir/'last.pt').write_bytes(whole[:len(whole) // 2])               # a copy of the folder that died half-way
    (run_dir/'metrics.csv').unlink(); (run_dir/'results.json').unlink()
    res = run(train_command('--resume', '--out', run_dir, '--no-progress', '--device', 'cpu'))
    assert 'last.pt is damaged' in res.stdout and 'using' in res.stdout and 'last.prev.pt' in res.stdout, res.stdout
    assert 'at epoch 2, step 8' in res.stdout
    assert metrics_without_time(run_dir) == metrics_without_time(reference['one'])

def test_second_run_on_a_folder_is_refused(reference, tmp_path, capsys):
    run_dir = tmp_path/'run'; shutil.copytree(reference['one'], run_dir)
    holder = subprocess.Popen([sys.executable, '-c', f'from cir_unc.runs import lock_run_dir; import time\n'
                               f'with lock_run_dir({str(run_dir)!r}): print("locked", flush=True); time.sleep(120)'],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
        with pytest.raises(SystemExit): train_cli(['--resume', '--out', str(run_dir), '--no-progress'])
        assert 'in use by another run' in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    finally: holder.kill(); holder.wait()

@pytest.fixture
def one_thread():
    "The reference runs' thread count, for in-process evaluation that must give their numbers."
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def test_eval_command(reference, tmp_path, capsys, one_thread):
    eval_cli([str(reference['one']), '--protocol', 'multi', '--split', 'test', '--json', str(tmp_path/'eval.json')])
    out = capsys.readouterr().out
    assert 'R@10' in out and 'coarse' in out
    results = json.loads((tmp_path/'eval.json').read_text())['results']
    assert results and all(k.startswith('test/') and k.endswith('/multi') for k in results)
    expected = json.loads((reference['one']/'results.json').read_text())['results']
    for name, r in results.items(): assert r['R@10'] == pytest.approx(expected[name]['R@10'])   # same checkpoint, same numbers

@pytest.mark.parametrize('args, message', [
    (['--preset', 'cifar'], "invalid choice: 'cifar'"),
    (['--learning-rate', '0.1'], 'unrecognized arguments: --learning-rate'),
    (['--batch-size', '1'], 'at least 2 samples'),
    (['--workers', '4096'], 'more than the'),
    (['--checkpoint-every', '-1'], '--checkpoint-every must be >= 0'),
    (['--preset', 'fashioniq', '--data-root', '/nonexistent/fashioniq'], '/nonexistent/fashioniq'),
    (['--preset', 'shoes'], 'data_root'),
    (['--model', 'colour=1'], 'unknown --model fields'),
    (['--resume', '--overwrite'], 'contradict'),
])
def test_bad_input(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit: train_cli(['--out', str(tmp_path/'run'), '--no-progress', *args])
    assert exit.value.code != 0
    err = capsys.readouterr().err + (exit.value.code if isinstance(exit.value.code, str) else '')
    assert message in err, err

def test_existing_run_is_kept(reference, capsys):
    run_dir = reference['one']
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(SystemExit): train_cli([*TINY, '--data-root', str(reference['data']), '--out', str(run_dir)])
    err = capsys.readouterr().err
    assert '--resume' in err and '--overwrite' in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before         # nothing lost

def test_resume_refuses_other_model(reference, tmp_path, capsys):
    run_dir = tmp_path/'run'; shutil.copytree(reference['one'], run_dir)
    config = json.loads((run_dir/'config.json').read_text()); config['model']['text_width'] = 32
    (run_dir/'config.json').write_text(json.dumps(config))
    with pytest.raises(SystemExit): train_cli(['--resume', '--out', str(run_dir), '--no-progress'])
    err = capsys.readouterr().err
    assert 'different model configuration' in err and 'text_width' in err

def test_unsafe_checkpoint_refused(tmp_path, capfd):
    class Payload:
        def __reduce__(self): return (os.system, ('echo pwned',))
    torch.save({'model': Payload()}, tmp_path/'evil.pt')
    with pytest.raises(SystemExit): eval_cli([str(tmp_path/'evil.pt')])
    out, err = capfd.readouterr()
    assert 'refused' in err and 'pwned' not in out

def test_nan_stops_with_epoch_and_step(reference, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_cli([*TINY, '--epochs', '1', '--lr', '1e12', '--data-root', str(reference['data']), '--out', str(tmp_path/'run')])
    assert 'at epoch 0, step' in capsys.readouterr().err

def test_oracle_trains_on_synthetic_data_only(reference, tmp_path, monkeypatch, capsys):
    "The oracle masks the batch's other valid targets; a dataset that does not know them is refused with the reason."
    train_cli([*TINY, '--epochs', '1', '--loss', 'oracle', '--data-root', str(reference['data']), '--out', str(tmp_path/'oracle')])
    rows = list(csv.DictReader(open(tmp_path/'oracle'/'metrics.csv')))
    assert rows[0]['gamma'] == '0.0' and float(rows[0]['grad_ratio']) > 0
    assert float(rows[0]['loss']) <= float(rows[0]['loss_info'])      # fewer negatives in the softmax: never a higher loss
    import cir_unc.train as train_module
    real = train_module.build_data
    def without_ground_truth(config):
        data = real(config); data.valid_targets = None; return data
    monkeypatch.setattr(train_module, 'build_data', without_ground_truth)
    with pytest.raises(SystemExit) as exit:
        train_cli([*TINY, '--epochs', '1', '--loss', 'oracle', '--data-root', str(reference['data']), '--out', str(tmp_path/'refused')])
    assert 'known valid targets' in str(exit.value.code) + capsys.readouterr().err
