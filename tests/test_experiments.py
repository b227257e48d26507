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
    assert c.data['synthetic'] == {'train_triplets': BUDGET['train_triplets'], 'coarse_fraction': 0.8}
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
