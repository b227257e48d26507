"""Broken real data, as users have it: for each reader and each protocol, fixtures in the published formats with a
missing image, a truncated JPEG at the start, the middle and the end of the gallery and as a query reference, and a
pair whose reference is its target. What the reader builds, what it counts, and Recall@K are checked against a
brute-force computation over the usable images alone, worked out from the published rules (not from the readers)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from fixtures import (break_image, fashioniq_faults, shoes_faults, fashion200k_faults, write_fashion200k, write_noise)
import cir_unc.readers as readers
from cir_unc.data import WordTokenizer, image_transform
from cir_unc.datasets import check_data, load_dataset
from cir_unc.readers import open_image, verdict_cache
from cir_unc.metrics import encode_gallery, encode_queries, evaluate_sets, recall_at_k, topk_search
from cir_unc.model import CIRModel, ModelConfig

READERS = {                      # name → (fixture, preset, protocols)
    'fashioniq-flat': (lambda root: fashioniq_faults(root, 'flat'), 'fashioniq', ('val', 'original')),
    'fashioniq-released': (lambda root: fashioniq_faults(root, 'released'), 'fashioniq', ('val', 'original')),
    'shoes': (shoes_faults, 'shoes', ('original',)),
    'fashion200k': (fashion200k_faults, 'fashion200k', ('tirg', 'released')),
}
FAULTS = [('missing', 'middle'), ('truncated', 'start'), ('truncated', 'middle'), ('truncated', 'end'), ('truncated', 'reference')]
CASES = [(reader, protocol, fault) for reader, (_, _, protocols) in READERS.items() for protocol in protocols for fault in FAULTS]
KS = (1, 2, 3, 5)
CPU = torch.device('cpu')

def load(preset, root, **kw):
    return load_dataset(preset, root, image_size=32, progress=False, categories=['dress'] if preset == 'fashioniq' else None, **kw)

def victim(spec, protocol: str, where: str) -> str:
    "The image to break: the gallery's first, middle or last, or a query's reference (not the gallery's first)."
    gallery = spec.galleries[protocol]
    return {'start': gallery[0], 'middle': gallery[len(gallery) // 2], 'end': gallery[-1], 'reference': spec.pairs[1][0]}[where]

def expected_set(spec, protocol: str, usable: set) -> tuple[list, list]:
    "The gallery and the queries (reference, text, target, hit ids, excluded ids) the published rules give over `usable` images."
    ok = lambda *ids: all(i in usable for i in ids)
    pairs = [(r, t, c) for r, t, c in spec.pairs if any(c) and ok(r, t)]
    if spec.dataset == 'fashioniq':
        texts = lambda c: [f'{c[0]} and {c[1]}', f'{c[1]} and {c[0]}'] if all(c) else [x for x in c if x]
        if protocol == 'val':                                   # reference ∪ target of the pairs; two queries; reference removed
            gallery = list(dict.fromkeys(i for r, t, _ in pairs for i in (r, t)))
            return gallery, [(r, x, t, {t} - {r}, {r}) for r, t, c in pairs for x in texts(c)]
        gallery = [i for i in spec.galleries['original'] if ok(i)]   # the whole split; one query; nothing removed
        return gallery, [(r, texts(c)[0], t, {t}, set()) for r, t, c in pairs if t in gallery]
    gallery = [i for i in spec.galleries[protocol] if ok(i)]
    if spec.dataset == 'shoes': return gallery, [(r, c[0], t, {t} - {r}, {r}) for r, t, c in pairs]
    d, queries = spec.descriptions, []
    for r, t, c in pairs:                                       # hits: the target's description; removal: tirg or released
        exclude = {r} if protocol == 'tirg' else {i for i in gallery if d[i] == d[r]}
        queries.append((r, c[0], t, {i for i in gallery if d[i] == d[t]} - exclude, exclude))
    return gallery, queries

class PixelModel(torch.nn.Module):
    "Features that tell any two fixture images apart (the image pooled to 4×4), and a vector per word added for a query."
    def __init__(self, vocab_size: int):
        super().__init__()
        self.words = torch.nn.Embedding(vocab_size, 48)
        torch.nn.init.normal_(self.words.weight, std=0.2)
    def encode_target(self, images): return F.normalize(F.adaptive_avg_pool2d(images, 4).flatten(1), dim=-1)
    def compose(self, reference, input_ids, attention_mask):
        return F.normalize(self.encode_target(reference) + (self.words(input_ids) * attention_mask[..., None]).sum(1), dim=-1)

def brute_force(model, spec, gallery: list, queries: list, tokenizer, transform) -> dict:
    "Recall@K (%) with every image and query encoded alone and each ranking sorted in plain Python."
    pixels = lambda i: transform(open_image(spec.files[i]))[None]
    found = dict.fromkeys(KS, 0)
    with torch.inference_mode():
        target = {i: model.encode_target(pixels(i))[0] for i in gallery}
        for reference, text, _, hits, exclude in queries:
            tokens = tokenizer([text])
            query = model.compose(pixels(reference), tokens['input_ids'], tokens['attention_mask'])[0]
            ranked = sorted((i for i in gallery if i not in exclude), key=lambda i: -float(query @ target[i]))
            for k in KS: found[k] += any(i in hits for i in ranked[:k])
    return {k: 100. * n / len(queries) for k, n in found.items()}

@pytest.mark.parametrize('reader, protocol, fault', CASES, ids=[f'{r}-{p}-{h}-{w}' for r, p, (h, w) in CASES])
def test_fault_matrix(tmp_path, reader, protocol, fault):
    build, preset, _ = READERS[reader]
    spec, (how, where) = build(tmp_path/'data'), fault
    broken = victim(spec, protocol, where)
    break_image(spec.files[broken], how)
    data = load(preset, spec.root, protocols=[protocol])
    (ev,) = data.evals
    gallery, queries = expected_set(spec, protocol, set(spec.files) - {broken})
    assert ev.gallery == gallery and broken not in ev.gallery
    assert [(q.reference, q.text, q.target, {ev.gallery[i] for i in q.hits}, {ev.gallery[i] for i in q.exclude}) for q in ev.queries] == queries
    lost = sum(1 for r, t, c in spec.pairs if any(c) and broken in (r, t))
    bad = 'missing' if how == 'missing' else 'corrupt'
    assert ev.summary() == {
        'name': ev.name, 'protocol': protocol, 'queries': len(queries), 'gallery': len(gallery),
        'reference_is_target': sum(r == t for r, _, t, *_ in queries), 'unanswerable': sum(not q[3] for q in queries),
        'dropped': {'missing_images': int(bad == 'missing'), 'corrupt_images': int(bad == 'corrupt'),
                    'pairs_with_unusable_image': lost, 'pairs_without_text': sum(not any(c) for *_, c in spec.pairs)}}
    report = check_data(preset, spec.root, protocols=[protocol], progress=False, categories=['dress'] if preset == 'fashioniq' else None)
    assert report['sets'] == [ev.summary()]                     # what check_data prints is what evaluation uses
    split = 'val' if preset == 'fashioniq' else 'test'
    counts = next(iter(report['splits'][split].values()))
    assert (counts['queries'][protocol], counts['gallery'][protocol], counts[f'{bad}_images']) == (len(queries), len(gallery), 1)
    tokenizer = WordTokenizer.from_texts([q.text for q in ev.queries])
    torch.manual_seed(0)
    model = PixelModel(tokenizer.vocab_size)
    (result,) = evaluate_sets(model, data.evals, data.eval_transform(), tokenizer, CPU, ks=KS).values()
    assert (result.queries, result.gallery) == (len(queries), len(gallery))
    assert result.recall == pytest.approx(brute_force(model, spec, gallery, queries, tokenizer, data.eval_transform()))

def test_laptop_model_evaluates_broken_data(tmp_path):
    "The laptop model through the whole evaluation path, on Fashion200k with a corrupt gallery image and a missing query image."
    spec = fashion200k_faults(tmp_path/'f')
    break_image(spec.files[spec.galleries['tirg'][0]], 'truncated'); break_image(spec.files[spec.pairs[1][0]], 'missing')
    data = load('fashion200k', spec.root)
    tokenizer = WordTokenizer.from_texts([q.text for e in data.evals for q in e.queries])
    torch.manual_seed(0)
    model = CIRModel(ModelConfig.laptop(vocab_size=tokenizer.vocab_size))
    results = evaluate_sets(model, data.evals, data.eval_transform(), tokenizer, CPU, ks=KS)
    assert [(r.queries, r.gallery) for r in results.values()] == [(len(e.queries), len(e.gallery)) for e in data.evals] == [(2, 10)] * 2

def test_reference_is_target_kept_for_training(tmp_path):
    "Shoes and FashionIQ pairs whose reference is the target stay in training (the loss pulls the query to the image itself)."
    for build, preset in [(shoes_faults, 'shoes'), (fashioniq_faults, 'fashioniq')]:
        spec = build(tmp_path/preset)
        data = load(preset, spec.root)
        assert {(t.reference, t.target) for t in data.train} == set(spec.train)
        split = next(iter(data.report['train'].values()))
        assert split['reference_is_target'] == 1 and split['usable_pairs'] == len(spec.train)

def test_shoes_cli_counts_reference_is_target(tmp_path):
    spec = shoes_faults(tmp_path/'s')
    code = 'import sys; from cir_unc.datasets import check_data_cli; sys.exit(check_data_cli())'
    result = subprocess.run([sys.executable, '-c', code, '--preset', 'shoes', '--data-root', str(spec.root), '--json'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report['splits']['test']['all']['reference_is_target'] == 1 and report['splits']['train']['all']['reference_is_target'] == 1
    assert report['sets'][0]['unanswerable'] == 1 and report['sets'][0]['queries'] == 5

def test_faiss_equals_chunked_with_dropped_images(tmp_path):
    pytest.importorskip('faiss')
    spec = fashion200k_faults(tmp_path/'f')
    gallery = spec.galleries['tirg']
    break_image(spec.files[gallery[0]], 'truncated'); break_image(spec.files[gallery[7]], 'missing')
    data = load('fashion200k', spec.root)
    tokenizer = WordTokenizer.from_texts([q.text for e in data.evals for q in e.queries])
    torch.manual_seed(0)
    model = CIRModel(ModelConfig.laptop(vocab_size=tokenizer.vocab_size)).eval()
    for ev in data.evals:
        features = encode_gallery(model, ev, data.eval_transform(), tokenizer, CPU)
        query = encode_queries(model, ev, data.eval_transform(), tokenizer, CPU)
        assert len(features) == len(ev.gallery) == len(gallery) - 2 and len(query) == len(ev.queries)
        exclude, hits = [sorted(q.exclude) for q in ev.queries], [sorted(q.hits) for q in ev.queries]
        chunked = topk_search(query, features, len(features), exclude, chunk_size=2, gallery_chunk_size=3)
        flat = topk_search(query, features, len(features), exclude, backend='faiss')
        assert torch.equal(chunked[1], flat[1]) and torch.allclose(chunked[0], flat[0], atol=1e-5)
        assert (recall_at_k(query, features, hits, 'x', KS, exclude, backend='faiss').recall
                == recall_at_k(query, features, hits, 'x', KS, exclude).recall)

ORDER = '''
import json, sys
from cir_unc.datasets import load_dataset
out = {}
for preset, root in json.loads(sys.argv[1]).items():
    data = load_dataset(preset, root, categories=['dress'] if preset == 'fashioniq' else None, progress=False)
    out[preset] = {'galleries': [e.gallery for e in data.evals], 'queries': [[q.reference, q.text] for e in data.evals for q in e.queries],
                   'train': [[t.reference, t.target] for t in data.epoch_triplets(3, seed=7)]}
print(json.dumps(out))
'''

def test_gallery_order_fixed_across_runs(tmp_path):
    "Galleries, queries and a Fashion200k epoch's pairs come out in the same order in fresh processes with other hash seeds."
    roots = {}
    for preset, build in [('fashioniq', fashioniq_faults), ('shoes', shoes_faults), ('fashion200k', fashion200k_faults)]:
        spec = build(tmp_path/preset)
        break_image(spec.files[next(iter(spec.galleries.values()))[3]], 'truncated')
        roots[preset] = str(spec.root)
    runs = [subprocess.run([sys.executable, '-c', ORDER, json.dumps(roots)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, 'PYTHONHASHSEED': seed}) for seed in ('1', '2')]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == second
    assert first['shoes']['galleries'][0] == sorted(first['shoes']['galleries'][0])
    here = load('fashion200k', roots['fashion200k'])
    assert [[t.reference, t.target] for t in here.epoch_triplets(3, seed=7)] == first['fashion200k']['train']

def test_verdicts_cached_and_renewed(tmp_path, monkeypatch):
    spec = shoes_faults(tmp_path/'s')
    first = load('shoes', spec.root)
    assert verdict_cache(spec.root) == spec.root.resolve()/'.cir_unc'/'image_verdicts.json' and verdict_cache(spec.root).exists()
    decode = readers.image_verdict
    monkeypatch.setattr(readers, 'image_verdict', lambda path: pytest.fail(f'{path} decoded again'))
    assert [e.gallery for e in load('shoes', spec.root).evals] == [e.gallery for e in first.evals]
    victim = spec.galleries['original'][3]
    break_image(spec.files[victim], 'truncated')                 # a new size: the file is judged anew, and only it
    decoded = []
    monkeypatch.setattr(readers, 'image_verdict', lambda path: decoded.append(Path(path).name) or decode(path))
    third = load('shoes', spec.root)
    assert decoded == [victim] and victim not in third.evals[0].gallery
    assert third.report['test']['all']['corrupt_images'] == {victim}
    presence = load('shoes', spec.root, decode=False)            # presence only: the truncated file passes, nothing cached
    assert victim in presence.evals[0].gallery

def test_verdict_cache_when_root_is_read_only(tmp_path, monkeypatch):
    spec = shoes_faults(tmp_path/'s')
    (spec.root/'.cir_unc').write_text('')                        # the cache folder cannot be made, as on a read-only root
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'user-cache'))
    path = verdict_cache(spec.root)
    assert path.parent == tmp_path/'user-cache'/'cir_unc'/'image_verdicts'
    load('shoes', spec.root)
    assert len(json.loads(path.read_text())['files']) == len(spec.files)

@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() == 0, reason='root writes into read-only folders')
def test_verdict_cache_on_a_read_only_folder(tmp_path, monkeypatch):
    spec = shoes_faults(tmp_path/'s')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'user-cache'))
    spec.root.chmod(0o555)
    try: assert verdict_cache(spec.root).parent == tmp_path/'user-cache'/'cir_unc'/'image_verdicts'
    finally: spec.root.chmod(0o755)

def f200k_train(root: Path) -> dict:
    "Train labels with several images per description and several one-word neighbours per description."
    words = ['red midi dress', 'blue midi dress', 'red maxi dress', 'red mini dress', 'green midi dress']
    labels = [(f'women/dresses/casual/a_{k}/a_{k}_0.jpeg', words[k % 5]) for k in range(15)]
    test = [(f'women/dresses/day/b_{k}/b_{k}_0.jpeg', w) for k, w in enumerate(['white lace dress', 'black lace dress'])]
    write_fashion200k(root, {'train': labels, 'test': test}, [(test[0][0], test[1][0])])
    for k, (path, _) in enumerate(labels + test): write_noise(root/path, 300 + k)
    return dict(labels)

def test_fashion200k_pairs_resampled_every_epoch(tmp_path):
    labels = f200k_train(tmp_path/'f')
    data = load('fashion200k', tmp_path/'f')
    epochs = [data.epoch_triplets(e, seed=0) for e in range(6)]
    assert all([t.reference for t in e] == list(labels) for e in epochs)          # every source, every epoch
    assert [t.target for t in epochs[0]] != [t.target for t in epochs[1]]          # two epochs, other targets
    assert epochs[0] == data.train and data.train_dataset(epoch=1).triplets == epochs[1]
    assert data.epoch_triplets(1, seed=0) == epochs[1] and data.epoch_triplets(1, seed=1) != epochs[1]
    assert all(len(t.text.split()) == 4 for e in epochs for t in e)               # 'replace X with Y': one word each
    assert max(len({t.target for e in epochs for t in e if t.reference == s}) for s in labels) > 2
    broken = list(labels)[4]
    break_image(tmp_path/'f'/broken, 'truncated')
    data = load('fashion200k', tmp_path/'f')
    assert all(broken not in (t.reference, t.target) for e in range(6) for t in data.epoch_triplets(e))
    assert data.report['train']['all']['usable_pairs'] == len(data.train) == len(labels) - 1

def test_other_datasets_same_triplets_every_epoch(tmp_path):
    spec = shoes_faults(tmp_path/'s')
    data = load('shoes', spec.root)
    assert data.epoch_triplets(4, seed=2) == data.train and data.train_dataset(epoch=4, seed=2).triplets == data.train
