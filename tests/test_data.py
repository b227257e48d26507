"""What the data notebooks cannot test: `cir_unc_check_data` as a process, its JSON, worker processes meeting corrupt
images, Hugging Face tokenizers, and the readers on fixtures in the published layouts (`fixtures.py`, in temp folders).
The fault matrix of broken images is in `test_data_faults.py`."""
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from cir_unc.data import Collate, SyntheticConfig, Triplet, tokenize
from cir_unc.datasets import DataError, check_data, load_dataset, read_fashioniq, read_shoes
from fixtures import make_fashion200k_fixture, make_fashioniq_fixture, make_shoes_fixture

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
    train = {'pairs': 1, 'usable_pairs': 1, 'missing_images': 0, 'corrupt_images': 0, 'empty_captions': 0,
             'reference_is_target': 0, 'queries': {}, 'gallery': {}}
    val = {'pairs': 3, 'usable_pairs': 2, 'missing_images': 1, 'corrupt_images': 0, 'empty_captions': 1,
           'reference_is_target': 0, 'queries': {'val': 3, 'original': 2}, 'gallery': {'val': 4, 'original': 5}}
    assert {k: v for k, v in report.items() if k != 'sets'} == {'dataset': 'fashioniq', 'decoded': True, 'splits': {
        'train': {'dress': train, 'shirt': {**train, 'usable_pairs': 0, 'corrupt_images': 1}, 'toptee': train},
        'val': {'dress': {**val, 'corrupt_images': 1, 'gallery': {'val': 4, 'original': 4}}, 'shirt': val, 'toptee': val}}}
    data = load_dataset('fashioniq', fashioniq)                 # the sizes evaluation uses are the ones reported
    assert report['sets'] == [e.summary() for e in data.evals]
    assert [(s['queries'], s['gallery']) for s in report['sets']] == [(3, 4), (2, 4), (3, 4), (2, 5), (3, 4), (2, 5)]
    assert report['sets'][1]['dropped'] == {'missing_images': 1, 'corrupt_images': 1, 'pairs_with_unusable_image': 1, 'pairs_without_text': 0}

def test_check_data_table_and_protocol(fashioniq):
    result = run_cli('--preset', 'fashioniq', '--data-root', fashioniq, '--protocol', 'original')
    assert result.returncode == 0, result.stderr
    assert 'original: 2 / 4' in result.stdout and 'val: 3 / 4' not in result.stdout

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
        'empty_captions': 0, 'reference_is_target': 0, 'queries': {'original': 2}, 'gallery': {'original': 3}}
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
    assert flat.train == released.train
    assert [(e.name, e.protocol, e.gallery, e.queries) for e in flat.evals] == [(e.name, e.protocol, e.gallery, e.queries) for e in released.evals]

def test_released_layout_without_image_splits(tmp_path):
    root = make_fashioniq_fixture(tmp_path/'b', 'released')
    shutil.rmtree(root/'image_splits')
    data = read_fashioniq(root, categories=['dress'])
    assert [e.protocol for e in data.evals] == ['val']
    assert 'image_splits' in data.report['val']['dress']['notes'][0]

def test_both_captions_empty_and_strict(tmp_path):
    root = make_fashioniq_fixture(tmp_path/'fiq')
    path = root/'captions'/'cap.dress.val.json'
    records = json.loads(path.read_text())
    records[0]['captions'] = ['', ' ']
    path.write_text(json.dumps(records))
    data = read_fashioniq(root, categories=['dress'])
    val, original = data.evals
    assert [q.text for q in val.queries] == ['is shorter'] and data.report['val']['dress']['empty_captions'] == 3
    assert val.dropped['pairs_without_text'] == 1
    with pytest.raises(DataError, match='A9'): read_fashioniq(root, categories=['dress'], strict=True)
    path.write_text('{not json')
    with pytest.raises(DataError, match='cap.dress.val.json'): read_fashioniq(root, categories=['dress'])

def test_shoes_missing_list(tmp_path):
    root = make_shoes_fixture(tmp_path/'s')
    (root/'eval_im_names.txt').unlink()
    with pytest.raises(DataError, match='eval_im_names.txt'): read_shoes(root)

def test_corrupt_image_in_workers(fashioniq):
    "A training image that breaks after the dataset was read, met by a worker process, is skipped and reported in the batch."
    data = load_dataset('fashioniq', fashioniq, image_size=32)
    assert all('shirt_T1' not in (t.reference, t.target) for t in data.train)      # judged corrupt when read: dropped
    truncate(fashioniq/'images'/'toptee_T2.jpg')                                    # broken since
    loader = torch.utils.data.DataLoader(data.train_dataset(), batch_size=2, num_workers=2, collate_fn=Collate())
    batches = list(loader)
    assert sum(b['size'] for b in batches) == len(data.train) - 2          # both toptee samples need toptee_T2
    assert sorted(i for b in batches for i in b['skipped']) == ['toptee_T2', 'toptee_T2']
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

def _split(**knobs):
    from cir_unc.data import _make_split
    return _make_split(SyntheticConfig(image_size=16, train_images=600, train_triplets=400, **knobs), 'train')

def test_coarse_free_leaves_the_free_attributes_free():
    "A coarse caption at coarse_free=2 never names pattern or length; its valid targets vary there; fine captions name every change."
    from cir_unc.data import ATTRIBUTES, FREE_ORDER, _A
    split = _split(hues=8, patterns=4, coarse_free=2)
    free = [_A[n] for n in FREE_ORDER[:2]]
    words = {w for n in FREE_ORDER[:2] for w in ATTRIBUTES[n]} | {'pattern', 'plain', 'longer', 'shorter', 'length'}
    coarse = [t for t in split.triplets if t.granularity == 'coarse']
    assert coarse and not any(set(t.text.replace(',', '').split()) & words - {'shorter', 'longer'} for t in coarse)
    assert not any(t.text.endswith(('is longer', 'is shorter')) or 'is longer,' in t.text or 'is shorter,' in t.text
                   or 'is longer and' in t.text or 'is shorter and' in t.text for t in coarse)
    p = split.position()
    varied = set()
    for t in coarse:
        fits = split.hits(t)
        assert fits[p[t.target]] and not fits[p[t.reference]]               # the labelled target fits, the reference does not
        varied |= {a for a in free if len(set(split.attributes[fits, a])) > 1}
    assert varied == set(free)
    fine = [t for t in split.triplets if t.granularity == 'fine']
    assert all(split.hits(t).sum() == (split.attributes == split.attributes[p[t.target]]).all(1)[split.categories == split.categories[p[t.target]]].sum()
               for t in fine[:50])                                          # fine: exactly the target's combination

def test_the_default_data_keeps_its_vocabulary_and_space():
    "hues=5, patterns=3, coarse_free=0 are the defaults: the words and the attribute space of the first testbed."
    from cir_unc.data import synthetic_tokenizer
    assert SyntheticConfig().sizes() == [5, 3, 3, 3, 3] and SyntheticConfig().free() == ()
    small, large = synthetic_tokenizer(), synthetic_tokenizer(SyntheticConfig(hues=8, patterns=4))
    assert large.vocab_size == small.vocab_size + 4                         # orange, pink, teal, checks
    split = _split(hues=8, patterns=4)
    assert split.attributes[:, 0].max() == 7 and split.attributes[:, 2].max() == 3

def test_false_negative_rate_grows_with_the_knob():
    from cir_unc.data import ambiguity
    rates = [ambiguity(_split(hues=8, patterns=4, coarse_free=f))['false_negatives_coarse'] for f in (0, 2)]
    assert rates[0] < rates[1]
