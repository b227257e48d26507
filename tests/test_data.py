"""What the data notebook cannot test: `cir_unc_check_data` as a process, its JSON, worker processes meeting corrupt
images, Hugging Face tokenizers, and the readers on fixtures in the published layouts (built here in temp folders)."""
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from cir_unc.data import Collate, SyntheticConfig, Triplet, tokenize
from cir_unc.datasets import (DataError, check_data, load_dataset, make_fashion200k_fixture, make_fashioniq_fixture,
                              make_shoes_fixture, read_fashioniq, read_shoes)

def run_cli(*args):
    "`cir_unc_check_data ARGS` in a fresh process (the installed script when on PATH, else the module function)."
    script = shutil.which('cir_unc_check_data')
    cmd = [script] if script else [sys.executable, '-c', 'import sys; from cir_unc.datasets import check_data_cli; sys.exit(check_data_cli())']
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=120)

def truncate(path: Path, keep: int = 100): path.write_bytes(path.read_bytes()[:keep])

@pytest.fixture
def fashioniq(tmp_path):
    root = make_fashioniq_fixture(tmp_path/'fiq')
    truncate(root/'images'/'A5.jpg')                          # dress: a corrupt image, only in the 'original' gallery
    truncate(root/'images'/'shirt_T1.jpg')                    # shirt: a corrupt training image
    return root

def test_check_data_json_fashioniq(fashioniq):
    result = run_cli('--preset', 'fashioniq', '--data-root', fashioniq, '--json')
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    train = {'pairs': 1, 'usable_pairs': 1, 'missing_images': 0, 'corrupt_images': 0, 'empty_captions': 0, 'queries': {}, 'gallery': {}}
    val = {'pairs': 3, 'usable_pairs': 2, 'missing_images': 1, 'corrupt_images': 0, 'empty_captions': 1,
           'queries': {'val': 3, 'original': 2}, 'gallery': {'val': 4, 'original': 5}}
    assert report == {'dataset': 'fashioniq', 'splits': {
        'train': {'dress': train, 'shirt': {**train, 'corrupt_images': 1}, 'toptee': train},
        'val': {'dress': {**val, 'corrupt_images': 1}, 'shirt': val, 'toptee': val}}}

def test_check_data_table_and_protocol(fashioniq):
    result = run_cli('--preset', 'fashioniq', '--data-root', fashioniq, '--protocol', 'original')
    assert result.returncode == 0, result.stderr
    assert 'original: 2 / 5' in result.stdout and 'val: 3 / 4' not in result.stdout

@pytest.mark.parametrize('make, message', [(lambda p: p/'nowhere', 'does not exist'),
                                           (lambda p: p, 'cap.dress.train.json')])
def test_check_data_bad_root(tmp_path, make, message):
    result = run_cli('--preset', 'fashioniq', '--data-root', make(tmp_path))
    assert result.returncode == 2 and message in result.stderr and not result.stdout
    assert result.stderr.splitlines()[0].startswith('cir_unc_check_data: ')

def test_check_data_not_usable(tmp_path):
    root = make_shoes_fixture(tmp_path/'shoes')
    for f in root.rglob('*.jpg'): f.unlink()                   # every image gone
    result = run_cli('--preset', 'shoes', '--data-root', root, '--json')
    assert result.returncode == 1 and 'no usable' in result.stderr
    assert json.loads(result.stdout)['splits']['test']['all']['missing_images'] == 4

def test_check_data_shoes_and_fashion200k(tmp_path):
    shoes = json.loads(run_cli('--preset', 'shoes', '--data-root', make_shoes_fixture(tmp_path/'s'), '--json').stdout)
    assert shoes['splits']['test']['all'] == {'pairs': 3, 'usable_pairs': 2, 'missing_images': 1, 'corrupt_images': 0,
        'empty_captions': 0, 'queries': {'original': 2}, 'gallery': {'original': 3}}
    assert shoes['splits']['train']['all']['empty_captions'] == 1
    f200k = check_data('fashion200k', make_fashion200k_fixture(tmp_path/'f'))
    assert f200k['splits']['test']['all']['queries'] == {'tirg': 1, 'released': 1}
    assert f200k['splits']['test']['all']['gallery'] == {'tirg': 5, 'released': 5}

def test_check_data_synthetic(tmp_path):
    result = run_cli('--preset', 'synthetic', '--data-root', tmp_path, '--json')
    assert result.returncode == 0, result.stderr
    splits = json.loads(result.stdout)['splits']
    assert sum(c['pairs'] for c in splits['train'].values()) == SyntheticConfig().train_triplets
    assert set(splits['val']['dress']['gallery']) == {'multi', 'single'}
    assert len(list(tmp_path.glob('*/done'))) == 1             # generated into the given cache folder

def test_released_layout_equals_published(tmp_path):
    flat = read_fashioniq(make_fashioniq_fixture(tmp_path/'a'))
    released = read_fashioniq(make_fashioniq_fixture(tmp_path/'b', 'released'))
    assert flat[0] == released[0]
    assert [(e.name, e.protocol, e.gallery, e.queries) for e in flat[2]] == [(e.name, e.protocol, e.gallery, e.queries) for e in released[2]]

def test_released_layout_without_image_splits(tmp_path):
    root = make_fashioniq_fixture(tmp_path/'b', 'released')
    shutil.rmtree(root/'image_splits')
    _, _, evals, report = read_fashioniq(root, categories=['dress'])
    assert [e.protocol for e in evals] == ['val']
    assert 'image_splits' in report['val']['dress']['notes'][0]

def test_both_captions_empty_and_strict(tmp_path):
    root = make_fashioniq_fixture(tmp_path/'fiq')
    path = root/'captions'/'cap.dress.val.json'
    records = json.loads(path.read_text())
    records[0]['captions'] = ['', ' ']
    path.write_text(json.dumps(records))
    _, _, (val, original), report = read_fashioniq(root, categories=['dress'])
    assert [q.text for q in val.queries] == ['is shorter'] and report['val']['dress']['empty_captions'] == 3
    with pytest.raises(DataError, match='A9'): read_fashioniq(root, categories=['dress'], strict=True)
    path.write_text('{not json')
    with pytest.raises(DataError, match='cap.dress.val.json'): read_fashioniq(root, categories=['dress'])

def test_shoes_missing_list(tmp_path):
    root = make_shoes_fixture(tmp_path/'s')
    (root/'eval_im_names.txt').unlink()
    with pytest.raises(DataError, match='eval_im_names.txt'): read_shoes(root)

def test_corrupt_image_in_workers(fashioniq):
    "A corrupt training image met by a worker process is skipped and reported in the batch, never a crash."
    data = load_dataset('fashioniq', fashioniq, image_size=32)
    loader = torch.utils.data.DataLoader(data.train_dataset(), batch_size=2, num_workers=2, collate_fn=Collate())
    batches = list(loader)
    assert sum(b['size'] for b in batches) == len(data.train) - 2          # both shirt samples need shirt_T1
    assert sorted(i for b in batches for i in b['skipped']) == ['shirt_T1', 'shirt_T1']
    assert all(b['reference'].shape[1:] == (3, 32, 32) for b in batches if b['size'])

def test_hf_tokenizer_truncation():
    tokenizers = pytest.importorskip('tokenizers')
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(['[PAD]', '[UNK]', '[CLS]', 'is', 'red', 'and', 'blue'])}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token='[UNK]'))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=core, pad_token='[PAD]', unk_token='[UNK]', model_max_length=4)
    out = tokenize(hf, ['is red', 'is red and blue', 'is red and blue and red'])
    assert out['input_ids'].dtype == out['attention_mask'].dtype == torch.long
    assert out['input_ids'].shape == (3, 4) and out['truncated'] == 1            # 4 tokens fit; 6 do not
    assert out['attention_mask'].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert out['input_ids'][0, 2:].tolist() == [hf.pad_token_id] * 2
    short = tokenize(hf, ['is', 'is red'])
    assert short['input_ids'].shape == (2, 2) and short['truncated'] == 0

def test_synthetic_small_and_deterministic(tmp_path):
    config = SyntheticConfig(train_images=90, val_images=60, test_images=60, train_triplets=40, val_triplets=30,
                             test_triplets=30, image_size=32, seed=3)
    a = load_dataset('synthetic', tmp_path/'a', synthetic=config)
    b = load_dataset('synthetic', tmp_path/'b', synthetic=config)
    assert a.train == b.train and np.array_equal(np.asarray(a.images.array), np.asarray(b.images.array))
    assert a.images.open(a.train[0].reference).size == (32, 32)
    for e in a.evals:
        e.check()
        for q in e.queries:
            assert q.exclude == {e.gallery.index(q.reference)}
            if e.protocol == 'single': assert q.hits == {q.target_index}
    batch = Collate(a.tokenizer)([a.train_dataset()[i] for i in range(4)])
    assert batch['input_ids'].shape[0] == 4 and (batch['input_ids'] < a.tokenizer.vocab_size).all()
