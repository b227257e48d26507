"The experiment runner's command and configs (no training: the notebook trains a tiny experiment)."
import pytest
from cir_unc.experiments import EXPERIMENTS, BUDGET, experiment_cli, run_config, run_settings, run_dir_name

def test_list_names_every_experiment(capsys):
    experiment_cli(['--list'])
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)

def test_unknown_experiment_is_refused(capsys):
    with pytest.raises(SystemExit) as e: experiment_cli(['table9'])
    assert e.value.code == 2 and 'unknown experiments' in capsys.readouterr().err

def test_run_config_maps_every_knob(tmp_path):
    settings = run_settings('uncertainty', 2, dropout=0.2, w1=0.5, w2=2., gamma0=5., coarse_fraction=0.8, noise_variant='released')
    c = run_config(settings, tmp_path/'run', BUDGET, data_root=tmp_path)
    assert (c.loss, c.seed, c.dropout, c.w1, c.w2, c.gamma0, c.noise_variant) == ('uncertainty', 2, 0.2, 0.5, 2., 5., 'released')
    assert c.data['synthetic'] == {'train_triplets': BUDGET['train_triplets'], 'coarse_fraction': 0.8, 'coarse_free': 0}
    assert (c.epochs, c.decay_epochs, c.preset) == (BUDGET['epochs'], tuple(BUDGET['decay_epochs']), 'synthetic')

def test_shared_runs_are_the_same_folder():
    "The seed-0 baseline of Tables 1, 3 and 5 is one run; another size is another folder."
    names = [[run_dir_name(s) for s in EXPERIMENTS[e][1]] for e in ('main', 'dropout', 'gamma0')]
    assert all('infonce_seed0' in n for n in names)
    assert run_dir_name(run_settings('infonce'), {**BUDGET, 'train_triplets': 3000}) != 'infonce_seed0'

def test_headline_pairs_runs_by_seed(tmp_path):
    "The difference column is the mean of per-seed differences with its 95 % interval, whatever the order of the rows."
    from cir_unc.experiments import headline
    recalls = {0: (50., 53.), 1: (60., 62.), 2: (55., 59.)}          # seed: (baseline, ours) → differences 3, 2, 4
    lines = ['loss,seed,epochs,train_triplets,single/all/R@10']
    lines += [f'uncertainty,{seed},5,2400,{ours}' for seed, (_, ours) in recalls.items()]
    lines += [f'infonce,{seed},5,2400,{base}' for seed, (base, _) in reversed(recalls.items())]
    (tmp_path/'main.csv').write_text('\n'.join(lines) + '\n')
    table = headline(tmp_path/'main.csv', {'single/all/R@10': 'R@10'})
    assert '5 epochs on 2,400 triplets, mean ± sd of 3 seeds' in table
    assert table.splitlines()[-1] == '| R@10 | 55.0 ± 5.0 | 58.0 ± 4.6 | +3.0 (+0.5 to +5.5) |'   # 3 ± 4.303·1/√3

def test_the_sweep_has_five_seeds_of_three_methods_at_three_settings():
    from cir_unc.experiments import TESTBED_BUDGET, METHODS
    runs = EXPERIMENTS['ambiguity'][1]
    cells = {(s['loss'], s.get('coarse_free', 0)) for s in runs}
    assert len(cells) == 9 and {m for m, _ in cells} == set(METHODS) and len({f for _, f in cells}) >= 3
    assert all(sum((s['loss'], s.get('coarse_free', 0)) == cell for s in runs) >= 5 for cell in cells)
    assert len({run_dir_name(s, TESTBED_BUDGET) for s in runs}) == len(runs)           # one folder each
    assert all(run_dir_name(s, TESTBED_BUDGET).endswith('_testbed') for s in runs)
    c = run_config(run_settings('oracle', 3, coarse_free=2), 'x', TESTBED_BUDGET)
    assert (c.loss, c.data['synthetic']['coarse_free'], c.data['synthetic']['hues'], c.model['cnn_stem']) == ('oracle', 2, 8, 'patch')

def test_table3_on_the_testbed_shares_the_sweeps_runs():
    from cir_unc.experiments import TESTBED_BUDGET
    sweep = {run_dir_name(s, TESTBED_BUDGET) for s in EXPERIMENTS['ambiguity'][1]}
    table3 = [run_dir_name(s, TESTBED_BUDGET) for s in EXPERIMENTS['dropout_testbed'][1]]
    assert sum(name in sweep for name in table3) == 6                   # baseline and ours, seeds 0-2: trained once

def test_sweep_gains_pair_each_method_with_the_baseline_by_seed(tmp_path):
    "Made-up rows: at setting 2 ours gains 1, 2, 3 on three seeds (interval above zero), the oracle 0, ±1 (no difference)."
    from cir_unc.experiments import sweep_gains, sweep_headline, verdict
    lines = ['loss,seed,coarse_free,false_negatives,single/all/R@10,single/all/R@50']
    for seed, (base, ours, oracle) in enumerate([(50, 51, 50), (40, 42, 41), (45, 48, 44)]):
        lines += [f'infonce,{seed},2,1.7,{base},{base + 30}', f'uncertainty,{seed},2,1.7,{ours},{ours + 30}',
                  f'oracle,{seed},2,1.7,{oracle},{oracle + 30}']
    (tmp_path/'ambiguity.csv').write_text('\n'.join(lines) + '\n')
    import pandas as pd
    gains = sweep_gains(pd.read_csv(tmp_path/'ambiguity.csv'), {'single/all/R@10': 'R@10'})
    ours = gains[gains.method == 'uncertainty'].iloc[0]
    assert (ours['n'], ours['mean'], ours['false_negatives']) == (3, 2.0, 1.7)
    assert abs(ours['low'] - (2 - 4.303 / 3 ** 0.5)) < 1e-2                       # sd 1, t(2) = 4.303
    assert 'higher' in verdict(1, 0.2, 1.8, 3) and 'no difference detected at n = 3' in verdict(0, -1, 1, 3)
    table = sweep_headline(tmp_path/'ambiguity.csv')
    assert '| pattern, length | 1.70 | 45.0 ± 5.0 | +2.0 (' in table and 'n = 3 seeds' in table

def test_two_jobs_train_side_by_side_and_a_second_call_skips_them(tmp_path, monkeypatch):
    "The --jobs path: worker processes train the runs, the parent writes each row; the second call trains nothing."
    import csv
    from cir_unc import experiments
    tiny = dict(tag='tiny', epochs=1, decay_epochs=(), train_triplets=64,
                data=dict(hues=8, patterns=4, train_images=160, val_images=90, test_images=90, val_triplets=30, test_triplets=30,
                          image_size=32),
                train=dict(model={'cnn_widths': [8, 16, 32], 'text_width': 32, 'text_dim': 32, 'embed_dim': 32, 'cnn_stem': 'patch'}))
    monkeypatch.setitem(experiments.EXPERIMENTS, 'pair', ('two runs', [run_settings(loss, 0, coarse_free=1) for loss in ('infonce', 'oracle')], tiny))
    logged = []
    rows = experiments.run_experiment('pair', tmp_path/'exp', data_root=tmp_path/'data', jobs=2, log=logged.append)
    assert [r['loss'] for r in rows] == ['infonce', 'oracle'] and all(r['false_negatives'] >= 0 for r in rows)
    assert len(list(csv.DictReader(open(tmp_path/'exp'/'pair.csv')))) == 2
    again = experiments.run_experiment('pair', tmp_path/'exp', data_root=tmp_path/'data', jobs=2, log=logged.append)
    assert again == rows and sum('skipped' in line for line in logged) == 2
