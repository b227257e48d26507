"The training and evaluation commands as processes: kill and resume, bad input, evaluation of a run."
import csv, json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch

TINY = ['--preset', 'synthetic', '--batch-size', '32', '--warmup-epochs', '1', '--decay-epochs', '--no-progress',
        '--data', 'synthetic={"train_images": 240, "val_images": 120, "test_images": 120, "train_triplets": 384, '
                  '"val_triplets": 60, "test_triplets": 60}',
        '--model', 'cnn_widths=[16, 32, 64]', '--model', 'text_width=64']

def command(name, *args, timeout=300, **kwargs):
    "Run a console script of this package by its module path (the same code the entry point calls)."
    module, function = {'train': ('cir_unc.cli', 'train_cli'), 'eval': ('cir_unc.cli', 'eval_cli')}[name]
    code = f'import sys; from {module} import {function}; {function}(sys.argv[1:])'
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)

def metrics_without_time(run: Path) -> list[dict]:
    rows = list(csv.DictReader(open(run/'metrics.csv')))
    return [{k: v for k, v in r.items() if k != 'seconds'} for r in rows]

@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
    "A run of 3 epochs never interrupted."
    tmp = tmp_path_factory.mktemp('reference')
    res = command('train', *TINY, '--epochs', '3', '--data-root', tmp/'data', '--out', tmp/'run')
    assert res.returncode == 0, res.stderr
    return tmp

def test_run_directory(reference_run):
    run = reference_run/'run'
    for f in ('config.json', 'metrics.csv', 'last.pt', 'best.pt', 'results.json', 'loss_curves.png', 'recall_curves.png'):
        assert (run/f).exists(), f
    rows = list(csv.DictReader(open(run/'metrics.csv')))
    assert len(rows) == 3 and {'lr', 'gamma', 'loss', 'loss_u', 'loss_info', 'log_var', 'seconds'} <= set(rows[0])
    results = json.loads((run/'results.json').read_text())
    assert 'val/single mean R@10' in results['selected_on'] and results['best_epoch'] in (0, 1, 2)
    assert any(k.startswith('test/') for k in results['results'])

def test_kill_and_resume_is_exact(reference_run, tmp_path):
    args = [*TINY, '--epochs', '3', '--data-root', reference_run/'data', '--out', tmp_path/'run']
    code = 'import sys; from cir_unc.cli import train_cli; train_cli(sys.argv[1:])'
    proc = subprocess.Popen([sys.executable, '-c', code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:         # wait for the first epoch's checkpoint ...
        if (tmp_path/'run'/'metrics.csv').exists() and len(metrics_without_time(tmp_path/'run')) == 1: break
        time.sleep(0.05)
    time.sleep(0.3)                                               # ... then kill mid-way through the second epoch
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert len(metrics_without_time(tmp_path/'run')) < 3
    res = command('train', '--resume', '--out', tmp_path/'run', '--no-progress')
    assert res.returncode == 0, res.stderr
    assert 'resuming' in res.stdout
    assert metrics_without_time(tmp_path/'run') == metrics_without_time(reference_run/'run')

def test_eval_command(reference_run, tmp_path):
    res = command('eval', reference_run/'run', '--protocol', 'multi', '--split', 'test', '--json', tmp_path/'eval.json')
    assert res.returncode == 0, res.stderr
    assert 'R@10' in res.stdout and 'coarse' in res.stdout
    results = json.loads((tmp_path/'eval.json').read_text())['results']
    assert results and all(k.startswith('test/') and k.endswith('/multi') for k in results)
    expected = json.loads((reference_run/'run'/'results.json').read_text())['results']
    for name, r in results.items(): assert r['R@10'] == pytest.approx(expected[name]['R@10'])   # same checkpoint, same numbers

@pytest.mark.parametrize('args, message', [
    (['--preset', 'cifar'], "invalid choice: 'cifar'"),
    (['--learning-rate', '0.1'], 'unrecognized arguments: --learning-rate'),
    (['--batch-size', '1'], 'at least 2 samples'),
    (['--workers', '4096'], 'more than the'),
    (['--preset', 'fashioniq', '--data-root', '/nonexistent/fashioniq'], '/nonexistent/fashioniq'),
    (['--preset', 'shoes'], 'data_root'),
    (['--model', 'colour=1'], 'unknown --model fields'),
    (['--resume', '--overwrite'], 'contradict'),
])
def test_bad_input(tmp_path, args, message):
    res = command('train', '--out', tmp_path/'run', '--no-progress', *args, timeout=120)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr
    assert 'Traceback' not in res.stderr

def test_existing_run_is_kept(reference_run):
    run = reference_run/'run'
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    res = command('train', *TINY, '--epochs', '3', '--data-root', reference_run/'data', '--out', run)
    assert res.returncode != 0 and '--resume' in res.stderr and '--overwrite' in res.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before         # nothing lost

def test_resume_refuses_other_model(reference_run, tmp_path):
    import shutil
    run = tmp_path/'run'; shutil.copytree(reference_run/'run', run)
    config = json.loads((run/'config.json').read_text()); config['model']['text_width'] = 32
    (run/'config.json').write_text(json.dumps(config))
    res = command('train', '--resume', '--out', run, '--no-progress')
    assert res.returncode != 0 and 'different model configuration' in res.stderr and 'text_width' in res.stderr

def test_unsafe_checkpoint_refused(tmp_path):
    class Payload:
        def __reduce__(self): return (os.system, ('echo pwned',))
    torch.save({'model': Payload()}, tmp_path/'evil.pt')
    res = command('eval', tmp_path/'evil.pt')
    assert res.returncode != 0 and 'refused' in res.stderr and 'pwned' not in res.stdout

def test_nan_stops_with_epoch_and_step(reference_run, tmp_path):
    res = command('train', *TINY, '--epochs', '1', '--lr', '1e12', '--data-root', reference_run/'data', '--out', tmp_path/'run')
    assert res.returncode != 0 and 'at epoch 0, step' in res.stderr
