"""CIRR as published (nbs/13_cirr.ipynb), on a small CIRR in the published layout with broken images: what the reader
builds and counts, each protocol's queries and Recall@K against a brute-force ranking over the usable images (both
worked out from the published JSON, not from the reader), `cir_unc_check_data --preset cirr --json` as a process, and
the test server's files of `cir_unc_eval RUN --split test1 --submission OUT`, checked as the server reads them."""
import json, subprocess, sys
from dataclasses import asdict
from pathlib import Path
import pytest
import torch
from fixtures import break_image
from test_data_faults import PixelModel
from cir_unc.cirr import CIRR_PROTOCOLS, SERVER_LIMIT, SUBMISSION_K, cirr_rankings, cirr_summary, toy_cirr
from cir_unc.cli import eval_cli
from cir_unc.data import WordTokenizer
from cir_unc.datasets import load_dataset
from cir_unc.readers import open_image
from cir_unc.metrics import evaluate_sets, recall_at_k
from cir_unc.model import CIRModel, ModelConfig
from cir_unc.runs import save_checkpoint
from cir_unc.train import TrainConfig

CPU, SIZE, KS = torch.device('cpu'), 32, (1, 2, 3, 5, 10)
TEST1_PAIRS = 4148                      # the published test1 split

def published(root: Path, split: str) -> tuple[list, dict]:
    "The split's records and image name → file, read straight from the published JSON."
    records = json.loads((root/'captions'/f'cap.rc2.{split}.json').read_text())
    names = json.loads((root/'image_splits'/f'split.rc2.{split}.json').read_text())
    return records, {n: root/'img_raw'/p for n, p in names.items()}

@pytest.fixture(scope='module')
def broken(tmp_path_factory) -> dict:
    """The small CIRR with, in val: a missing image and a truncated PNG in the gallery (in no pair), a truncated and a
    missing reference; in test1: a missing gallery image, a truncated reference, a truncated subset member. Set 0 of val,
    whose first pair has two valid targets, stays intact."""
    root = toy_cirr(tmp_path_factory.mktemp('cirr')/'cirr')
    bad = {}
    for split, picks in (('val', [('missing', 'lonely', 0), ('truncated', 'member', 4), ('truncated', 'reference', 2),
                                  ('missing', 'reference', 6)]),
                         ('test1', [('missing', 'lonely', 0), ('truncated', 'reference', 3), ('truncated', 'member', 8)])):
        records, files = published(root, split)
        in_pairs = {r[k] for r in records for k in ('reference', 'target_hard') if k in r}
        in_sets = {m for r in records for m in r['img_set']['members']}
        for how, what, k in picks:
            if what == 'lonely': name = [n for n in files if n not in in_sets][k]
            elif what == 'reference': name = records[k]['reference']
            else: name = next(m for m in records[k]['img_set']['members'] if m not in in_pairs)
            break_image(files[name], how); bad[name] = 'missing' if how == 'missing' else 'corrupt'
    return {'root': root, 'bad': bad}

def expected(root: Path, split: str, protocol: str, bad: dict) -> tuple[list, list]:
    "Gallery and queries (reference, caption, target, hit names, candidate names in gallery order) by the published rules."
    records, files = published(root, split)
    gallery = [n for n in files if n not in bad]
    queries = []
    for r in records:
        if r['reference'] in bad or r['target_hard'] in bad: continue
        members = set(r['img_set']['members'])
        candidates = [n for n in gallery if n != r['reference'] and (n in members or not protocol.startswith('subset'))]
        valid = {r['target_hard']} | ({n for n, s in r['target_soft'].items() if s == 1.0} if protocol.endswith('_soft') else set())
        queries.append((r['reference'], r['caption'], r['target_hard'], valid & set(candidates), candidates))
    return gallery, queries

def as_names(ev) -> list:
    "The reader's queries in the terms of `expected`."
    return [(q.reference, q.text, q.target, {ev.gallery[i] for i in q.hits},
             [n for i, n in enumerate(ev.gallery) if i not in q.exclude]) for q in ev.queries]

def test_reader_builds_the_published_protocols(broken):
    root, bad = broken['root'], broken['bad']
    data = load_dataset('cirr', root, image_size=SIZE, progress=False)
    assert [e.protocol for e in data.evals] == list(CIRR_PROTOCOLS) and {e.split for e in data.evals} == {'val'}
    for ev in data.evals:
        gallery, queries = expected(root, 'val', ev.protocol, bad)
        assert ev.gallery == gallery and as_names(ev) == queries, ev.protocol
        assert ev.ks == ((1, 2, 3) if ev.protocol.startswith('subset') else None)
    soft = {e.protocol: e for e in data.evals}
    assert len(soft['original_soft'].queries[0].hits) == 2 and len(soft['original'].queries[0].hits) == 1
    assert [(t.reference, t.text, t.target) for t in data.train] == [(r['reference'], r['caption'], r['target_hard'])
                                                                     for r in published(root, 'train')[0]]
    val, test1 = data.report['val']['all'], data.report['test1']['all']
    val_bad = {n: v for n, v in bad.items() if n in published(root, 'val')[1]}
    assert (val['pairs'], val['usable_pairs'], val['several_valid_targets']) == (8, 6, 1)
    assert (val['missing_images'], val['corrupt_images']) == tuple({n for n, v in val_bad.items() if v == w} for w in ('missing', 'corrupt'))
    assert val['gallery'] == {'original': 22, 'subset': 5, 'original_soft': 22, 'subset_soft': 5}
    assert val['subset_sizes'] == {4: 4, 5: 2} and val['queries']['subset'] == 6
    assert (test1['pairs'], test1['usable_pairs'], test1['gallery'], test1['subset_sizes']) == (18, 17, {'original': 53, 'subset': 5}, {4: 3, 5: 14})
    assert all(e.summary()['dropped'] == {'missing_images': 2, 'corrupt_images': 2, 'pairs_with_unusable_image': 2,
                                          'pairs_without_text': 0} for e in data.evals)

def ranked(model, tokenizer, transform, files: dict, reference: str, text: str, candidates: list) -> list:
    "`candidates` sorted by the model's score for one query, each image encoded alone; ties keep the given order."
    pixels = lambda name: transform(open_image(files[name]))[None]
    with torch.inference_mode():
        tokens = tokenizer([text])
        query = model.compose(pixels(reference), tokens['input_ids'], tokens['attention_mask'])[0]
        scores = {n: float(query @ model.encode_target(pixels(n))[0]) for n in candidates}
    return sorted(candidates, key=lambda n: -scores[n])

def pixel_model(data) -> tuple:
    tokenizer = WordTokenizer.from_texts([q.text for q in data.evals[0].queries])
    torch.manual_seed(0)
    return PixelModel(tokenizer.vocab_size).eval(), tokenizer

def test_recall_equals_brute_force(broken):
    "Every protocol's Recall@K equals a ranking done by hand over the usable images alone."
    root, bad = broken['root'], broken['bad']
    data = load_dataset('cirr', root, image_size=SIZE, progress=False, train=False)
    model, tokenizer = pixel_model(data)
    files, transform = published(root, 'val')[1], data.eval_transform()
    results = evaluate_sets(model, data.evals, transform, tokenizer, CPU, ks=KS)
    for ev in data.evals:
        gallery, queries = expected(root, 'val', ev.protocol, bad)
        ks = (1, 2, 3) if ev.protocol.startswith('subset') else KS
        found = dict.fromkeys(ks, 0)
        for reference, text, _, hits, candidates in queries:
            order = ranked(model, tokenizer, transform, files, reference, text, candidates)
            for k in ks: found[k] += any(n in hits for n in order[:k])
        result = results[f'val/all/{ev.protocol}']
        assert result.recall == pytest.approx({k: 100 * n / len(queries) for k, n in found.items()}), ev.protocol
        assert (result.queries, result.gallery) == (len(queries), len(gallery))
    assert cirr_summary(results) == (results['val/all/original'].recall[5] + results['val/all/subset'].recall[1]) / 2

def test_soft_targets_count_the_second_valid_image(broken):
    "Pair 0 has two valid targets: a query that retrieves the second first misses under `original`, hits under `original_soft`."
    data = load_dataset('cirr', broken['root'], image_size=SIZE, progress=False, train=False, protocols=['original', 'original_soft'])
    hard, soft = data.evals
    second = next(iter(soft.queries[0].hits - hard.queries[0].hits))
    gallery = torch.eye(len(hard.gallery))
    query = gallery[[second] + [q.target_index for q in hard.queries[1:]]]
    scores = [recall_at_k(query, gallery, [sorted(q.hits) for q in ev.queries], ev.protocol, (1,),
                          [sorted(q.exclude) for q in ev.queries]).recall[1] for ev in (hard, soft)]
    n = len(hard.queries)
    assert scores == [pytest.approx(100 * (n - 1) / n), 100.]

def test_check_data_json_as_a_process(broken):
    code = 'import sys; from cir_unc.datasets import check_data_cli; sys.exit(check_data_cli())'
    result = subprocess.run([sys.executable, '-c', code, '--preset', 'cirr', '--data-root', str(broken['root']), '--json'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    splits = report['splits']
    assert {s: (c['all']['pairs'], c['all']['usable_pairs']) for s, c in splits.items()} == {'train': (6, 6), 'val': (8, 6), 'test1': (18, 17)}
    assert splits['val']['all']['gallery'] == {'original': 22, 'subset': 5, 'original_soft': 22, 'subset_soft': 5}
    assert splits['test1']['all']['queries'] == {'original': 17, 'subset': 17}
    assert (splits['val']['all']['missing_images'], splits['val']['all']['corrupt_images']) == (2, 2)
    assert [(s['name'], s['protocol'], s['queries'], s['gallery']) for s in report['sets']] == [('cirr/val/all', p, 6, 22) for p in CIRR_PROTOCOLS]

def check_server_files(files: dict, root: Path):
    "The two files as the server reads them: every test1 pair, 50 / 3 distinct names of the split, never the reference."
    records, names = published(root, 'test1')
    for metric, path in files.items():
        size, body = path.stat().st_size, json.loads(path.read_text())
        assert (body.pop('version'), body.pop('metric')) == ('rc2', metric)
        assert sorted(body) == sorted(str(r['pairid']) for r in records)
        for r in records:
            listed = body[str(r['pairid'])]
            pool = names if metric == 'recall' else r['img_set']['members']
            assert len(listed) == len(set(listed)) == SUBMISSION_K[metric] and set(listed) <= set(pool) and r['reference'] not in listed
        assert size < SERVER_LIMIT and size / len(records) * TEST1_PAIRS < SERVER_LIMIT     # a full test1 fits too
    assert max(len(n) for n in names) == len('test1-1001-2-img0') and max(len(str(r['pairid'])) for r in records) == 5

def test_rankings_follow_the_model(broken):
    "The server files' lists are the model's ranking of the usable images, completed in the published order where it runs short."
    root, bad = broken['root'], broken['bad']
    data = load_dataset('cirr', root, image_size=SIZE, progress=False, train=False)
    model, tokenizer = pixel_model(data)
    rankings = cirr_rankings(model, tokenizer, root, data.eval_transform(), CPU, progress=False)
    records, files = published(root, 'test1')
    gallery = [n for n in files if n not in bad]
    for r in records:
        key, reference, members = str(r['pairid']), r['reference'], r['img_set']['members']
        if reference in bad:                                         # no features: the split's order, then the set's
            assert rankings['recall'][key] == [n for n in files if n != reference][:50]
            assert rankings['recall_subset'][key] == [m for m in members if m != reference][:3]
            continue
        order = ranked(model, tokenizer, data.eval_transform(), files, reference, r['caption'], [n for n in gallery if n != reference])
        assert rankings['recall'][key] == order[:50]
        subset = ranked(model, tokenizer, data.eval_transform(), files, reference, r['caption'], [n for n in gallery if n in members and n != reference])
        assert rankings['recall_subset'][key] == subset[:3]
    assert rankings['counts'] == {'pairs': 18, 'ranked': 17, 'completed': 1, 'missing_images': 1, 'corrupt_images': 2}

def test_eval_cli_writes_the_server_files(broken, tmp_path, capsys):
    "`cir_unc_eval RUN --split test1 --submission OUT` on a run trained with the laptop model on CIRR files."
    root = broken['root']
    tokenizer = WordTokenizer.from_texts(r['caption'] for s in ('train', 'val') for r in published(root, s)[0])
    model_config = ModelConfig.laptop(vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    model = CIRModel(model_config)
    config = TrainConfig(preset='cirr', data_root=str(root), out=str(tmp_path/'run'), data={'image_size': SIZE})
    save_checkpoint(tmp_path/'run'/'best.pt', {'model': model.state_dict(), 'epoch': 0, 'model_config': asdict(model_config),
                                               'config': asdict(config), 'tokenizer': tokenizer.state_dict()})
    eval_cli([str(tmp_path/'run'), '--split', 'test1', '--submission', str(tmp_path/'server'), '--device', 'cpu'])
    files = {m: tmp_path/'server'/f'{m}_submission_cir_unc.json' for m in SUBMISSION_K}
    check_server_files(files, root)
    out = capsys.readouterr().out
    assert out.count('written') == 2 and "'completed': 1" in out
    for argv in (['--split', 'test1'], ['--split', 'val', '--submission', str(tmp_path/'x')]):
        with pytest.raises(SystemExit) as stop: eval_cli([str(tmp_path/'run'), *argv, '--device', 'cpu'])
        assert stop.value.code == 2 and 'scored only by its server' in capsys.readouterr().err

def test_summary_uses_r_at_5_where_r_at_10_differs(broken):
    """A ranking of the val queries in which R@5 and R@10 differ (half the labelled targets come 7th): `cirr_summary` is
    (R@5 + Recall_subset@1) / 2, so a summary built on R@10 fails here (on the model of the tests above they are equal)."""
    data = load_dataset('cirr', broken['root'], image_size=SIZE, progress=False, train=False, protocols=['original', 'subset'])
    original, subset = data.evals
    n, queries = len(original.gallery), original.queries
    scores = torch.zeros(len(queries), n)                 # query j scores gallery item k by scores[j, k]: features e_k
    for j, q in enumerate(queries):
        scores[j, q.target_index] = 1. if j % 2 == 0 else 0.5
        if j % 2:                                          # six other images first: the target comes 7th
            ahead = [k for k in range(n) if k not in q.hits and k not in q.exclude][:6]
            scores[j, ahead] = 0.9
    gallery = torch.eye(n)
    results = {f'val/all/{ev.protocol}': recall_at_k(scores, gallery, [sorted(q.hits) for q in ev.queries], ev.protocol,
                                                      ev.ks or (1, 5, 10, 50), [sorted(q.exclude) for q in ev.queries])
               for ev in (original, subset)}
    r5, r10, s1 = results['val/all/original'].recall[5], results['val/all/original'].recall[10], results['val/all/subset'].recall[1]
    assert r5 == pytest.approx(100 * sum(j % 2 == 0 for j in range(len(queries))) / len(queries)) and r10 == 100.
    assert cirr_summary(results) == pytest.approx((r5 + s1) / 2) and cirr_summary(results) != pytest.approx((r10 + s1) / 2)
