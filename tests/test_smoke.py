"""`cir_unc_train --smoke` on every real dataset as published, with broken images: it trains the laptop model briefly on
the CPU, evaluates every evaluation set, prints the Recall@K table, and records per set what its score rests on."""
import json, subprocess, sys
import pytest
from cir_unc.datasets import check_data
from fixtures import fashioniq_faults, shoes_faults, fashion200k_faults, break_image

CASES = {'fashioniq-flat': (fashioniq_faults, {}), 'fashioniq-released': (fashioniq_faults, {'layout': 'released'}),
         'shoes': (shoes_faults, {}), 'fashion200k': (fashion200k_faults, {})}

@pytest.mark.parametrize('case', list(CASES))
def test_smoke_run_on_broken_data(case, tmp_path):
    make, kwargs = CASES[case]
    spec = make(tmp_path/'data', **kwargs)
    gallery = next(iter(spec.galleries.values()))
    break_image(spec.files[gallery[0]], 'missing')          # the first gallery image is gone,
    break_image(spec.files[gallery[-1]], 'truncated')       # the last one half-downloaded
    code = 'import sys; from cir_unc.cli import train_cli; train_cli(sys.argv[1:])'
    out = tmp_path/'run'
    only_dress = ['--data', 'categories=["dress"]'] if spec.dataset == 'fashioniq' else []   # the fixture holds dresses only
    res = subprocess.run([sys.executable, '-c', code, '--preset', spec.dataset, '--data-root', str(spec.root), '--smoke',
                          '--batch-size', '2', '--out', str(out), '--no-progress', *only_dress], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out/'results.json').read_text())
    config = json.loads((out/'config.json').read_text())
    assert config['smoke'] and config['epochs'] == 1 and config['device'] == 'cpu' and config['max_steps'] == 200
    report = check_data(spec.dataset, spec.root, progress=False, categories=['dress'] if only_dress else None)
    expected = {f"{s['name'].split('/', 1)[1]}/{s['protocol']}": s for s in report['sets']}
    assert set(results['sets']) == set(results['results']) == set(expected)
    for name, s in results['sets'].items():                  # one source of truth: check_data's counts are the evaluation's
        assert s == expected[name], name
        assert s['dropped']['missing_images'] + s['dropped']['corrupt_images'] >= 1, name
        assert results['results'][name]['queries'] == s['queries'], name
    for name in results['sets']: assert name in res.stdout        # the Recall@K table is printed

def test_smoke_run_on_cirr(tmp_path):
    from cir_unc.cirr import toy_cirr
    root = toy_cirr(tmp_path/'cirr')
    code = 'import sys; from cir_unc.cli import train_cli; train_cli(sys.argv[1:])'
    res = subprocess.run([sys.executable, '-c', code, '--preset', 'cirr', '--data-root', str(root), '--smoke',
                          '--batch-size', '2', '--out', str(tmp_path/'run'), '--no-progress'], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path/'run'/'results.json').read_text())
    assert {s['protocol'] for s in results['sets'].values()} >= {'original', 'subset'}
    assert all(name in res.stdout for name in results['sets'])
