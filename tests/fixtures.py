"""Tiny datasets in the published formats, for the tests: FashionIQ (both layouts), Shoes and Fashion200k.

`make_*_fixture` write the small fixtures the reader tests use. `*_faults` write a larger one per dataset whose content
is also returned as plain Python (`Spec`), so that a test can work out what a reader should produce from the published
rules alone and compare; `break_image` damages one of its images."""
import json
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
from PIL import Image

CATEGORIES = ('dress', 'shirt', 'toptee')

def write_image(path: Path, colour=(120, 60, 30), size=(8, 8), mode='RGB'):
    "A solid-colour image at `path` (its folders made)."
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', size, colour).convert(mode).save(path)

def write_noise(path: Path, seed: int, size: int = 24):
    "A JPEG of random pixels: every image its own features, and large enough that a cut one cannot be decoded."
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)

def break_image(path: Path, how: str):
    "'missing': delete the file; 'truncated': keep its first half, as an interrupted download does."
    if how == 'missing': path.unlink()
    else: path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])

# ---------------------------------------------------------------------------------------------- small reader fixtures
def make_fashioniq_fixture(root: Path, layout: str = 'flat') -> Path:
    "A tiny FashionIQ in the published (`flat`) or released-code layout, with a missing image and an empty caption per category."
    for category in CATEGORIES:
        _fashioniq_fixture_category(Path(root), layout, category, '' if category == 'dress' else f'{category}_')
    return Path(root)

def _fashioniq_fixture_category(root: Path, layout: str, category: str, prefix: str):
    "One category of the fixture; image ids start with `prefix`."
    pair = lambda r, t, c1, c2: (prefix + r, prefix + t, [c1, c2])
    val = [pair('A1', 'A2', 'is red', 'has stripes'), pair('A3', 'A4', '', 'is shorter'),
           pair('A1', 'A9', 'is blue', 'is longer')]                                  # A9 is missing
    train = [pair('T1', 'T2', 'is darker', 'is ünïcode ✓')]
    write_fashioniq_annotations(root, layout, category, {'train': train, 'val': val},
                                {'val': [prefix + i for i in ['A1', 'A2', 'A3', 'A4', 'A5', 'A9']], 'train': [prefix + 'T1', prefix + 'T2']})
    folder = root/'images' if layout == 'flat' else root/'image_data'/category
    for k, name in enumerate(['A1', 'A2', 'A3', 'A4', 'A5', 'T1', 'T2']):
        write_image(folder/f'{prefix}{name}.jpg', (40 * k, 80, 200 - 20 * k))

def write_fashioniq_annotations(root: Path, layout: str, category: str, pairs: dict, splits: dict):
    "`pairs`: split → [(reference, target, [captions])]; `splits`: split → image ids (`image_splits/`, both layouts)."
    for split, rows in pairs.items():
        if layout == 'flat':
            records = [{'candidate': r, 'target': t, 'captions': c} for r, t, c in rows]
            (root/'captions').mkdir(parents=True, exist_ok=True)
            (root/'captions'/f'cap.{category}.{split}.json').write_text(json.dumps(records, ensure_ascii=False), encoding='utf-8')
        else:
            lines = [f"{category}/{r}.jpg;{category}/{t}.jpg;{c} " for r, t, captions in rows for c in captions if c]
            (root/'captions_pairs').mkdir(parents=True, exist_ok=True)
            (root/'captions_pairs'/f'fashion_iq-{split}-cap-{category}.txt').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    (root/'image_splits').mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (root/'image_splits'/f'split.{category}.{split}.json').write_text(json.dumps(ids))

def write_shoes(root: Path, records: list, train_names: list, eval_names: list):
    "`records`: (target, reference, caption) as in `relative_captions_shoes.json`; the name lists in their files."
    root.mkdir(parents=True, exist_ok=True)
    (root/'relative_captions_shoes.json').write_text(json.dumps(
        [{'ImageName': t, 'ReferenceImageName': r, 'RelativeCaption': c} for t, r, c in records]))
    (root/'train_im_names.txt').write_text(''.join(f'{n}\n' for n in train_names))
    (root/'eval_im_names.txt').write_text(''.join(f'{n}\n' for n in eval_names))

def shoes_path(root: Path, name: str) -> Path:
    "Where the published Shoes tree keeps an image: attributedata/womens_<kind>/<n>/<name>."
    kind = name.split('_')[2]
    return root/'attributedata'/f'womens_{kind}'/str(sum(map(ord, name)) % 3)/name

def make_shoes_fixture(root: Path) -> Path:
    "A tiny Shoes: 3 train and 4 eval images in nested folders, one eval image missing, one empty caption, one duplicated record."
    root = Path(root)
    records = [('img_womens_clogs_2.jpg', 'img_womens_clogs_1.jpg', 'is more textured'),
               ('img_womens_clogs_3.jpg', 'img_womens_clogs_2.jpg', ''),
               ('img_womens_pumps_2.jpg', 'img_womens_pumps_1.jpg', 'has a higher heel'),
               ('img_womens_pumps_2.jpg', 'img_womens_pumps_1.jpg', 'has a higher heel'),      # duplicated line
               ('img_womens_pumps_4.jpg', 'img_womens_pumps_3.jpg', 'is black'),              # pumps_4 is missing
               ('img_womens_pumps_1.jpg', 'img_womens_clogs_1.jpg', 'is a pump')]             # train → eval: neither
    write_shoes(root, records, [f'img_womens_clogs_{k}.jpg' for k in (1, 2, 3)], [f'img_womens_pumps_{k}.jpg' for k in range(1, 5)])
    for k in (1, 2, 3): write_image(root/'attributedata'/'womens_clogs'/'0'/f'img_womens_clogs_{k}.jpg', mode='L')
    for k in (1, 2, 3): write_image(root/'attributedata'/'womens_pumps'/str(k)/f'img_womens_pumps_{k}.jpg')
    return root

def write_fashion200k(root: Path, labels: dict, queries: list):
    "`labels`: split → [(path, description)] (one label file per split); `queries`: [(source, target)] paths."
    (root/'labels').mkdir(parents=True, exist_ok=True)
    for split, rows in labels.items():
        (root/'labels'/f'dress_{split}_detect_all.txt').write_text(''.join(f'{p}\t0.9\t{d}\n' for p, d in rows))
    (root/'test_queries.txt').write_text(''.join(f'{s} {t}\n' for s, t in queries))

def make_fashion200k_fixture(root: Path) -> Path:
    "A tiny Fashion200k: train and test labels with one-word neighbours, two test queries, one missing test image."
    root, path = Path(root), lambda i: f'women/dresses/day/{i}/{i}.jpeg'
    labels = {'train': [('a_0', 'red midi dress'), ('a_1', 'blue midi dress'), ('a_2', 'red maxi dress'), ('a_3', 'black leather jacket')],
              'test': [('b_0', 'white lace dress'), ('b_1', 'black lace dress'), ('b_2', 'black lace dress'),
                       ('b_3', 'white lace dress'), ('b_4', 'white silk dress'), ('b_5', 'green lace dress')]}
    write_fashion200k(root, {s: [(path(i), d) for i, d in rows] for s, rows in labels.items()},
                      [(path('b_0'), path('b_1')), (path('b_4'), path('b_5'))])
    for rows in labels.values():
        for i, _ in rows:
            if i != 'b_5': write_image(root/path(i), mode='CMYK')
    return root

# ---------------------------------------------------------------------------------------------- fault-matrix fixtures
@dataclass
class Spec:
    "What a fault fixture holds, as plain data: the files, the annotations, and per protocol the gallery order intended."
    dataset: str
    root: Path
    files: dict                     # image id → path
    pairs: list                     # eval pairs (reference, target, captions): FashionIQ's two; Shoes' and Fashion200k's text, [] if none
    galleries: dict                 # protocol → every gallery id in order, before any fault
    descriptions: dict = field(default_factory=dict)   # Fashion200k: test path → description
    train: list = field(default_factory=list)          # training pairs (reference, target)

def fashioniq_faults(root: Path, layout: str = 'flat') -> Spec:
    "FashionIQ dress: 6 val pairs over 10 images (an empty caption, a reference = target), 2 more in the val split; 2 train pairs."
    ids = [f'D{k}' for k in range(10)]
    val = [('D0', 'D1', ['is red', 'has stripes']), ('D2', 'D3', ['is blue', 'is longer']), ('D4', 'D5', ['', 'is shorter']),
           ('D6', 'D7', ['is darker', 'has a bow']), ('D8', 'D9', ['is plain', 'is silky']), ('D5', 'D5', ['is identical', 'same'])]
    whole = ['D0', 'X0', 'D1', 'D2', 'D3', 'D4', 'X1', 'D5', 'D6', 'D7', 'D8', 'D9']
    write_fashioniq_annotations(root, layout, 'dress', {'train': [('T0', 'T1', ['is red', 'is long']), ('T1', 'T1', ['same', 'alike'])], 'val': val},
                                {'val': whole, 'train': ['T0', 'T1']})
    folder = root/'images' if layout == 'flat' else root/'image_data'/'dress'
    files = {i: folder/f'{i}.jpg' for i in ids + ['X0', 'X1', 'T0', 'T1']}
    for k, path in enumerate(files.values()): write_noise(path, k)
    return Spec('fashioniq', root, files, val, {'val': list(dict.fromkeys(i for p in val for i in p[:2])), 'original': whole},
                train=[('T0', 'T1'), ('T1', 'T1')])

def shoes_faults(root: Path) -> Spec:
    "Shoes: 10 eval images in nested folders, 6 test pairs (one empty caption, one reference = target), 3 train images."
    evals = [f'img_womens_pumps_{k}.jpg' for k in range(10)]
    trains = [f'img_womens_clogs_{k}.jpg' for k in range(3)]
    pairs = [(evals[1], evals[0], 'is taller'), (evals[3], evals[2], 'is red'), (evals[5], evals[4], ''),
             (evals[7], evals[6], 'has a strap'), (evals[9], evals[8], 'is black'), (evals[4], evals[4], 'is identical')]
    train = [(trains[1], trains[0], 'is wider'), (trains[2], trains[2], 'is identical')]
    write_shoes(root, pairs + train, trains, evals)
    files = {n: shoes_path(root, n) for n in evals + trains}
    for k, path in enumerate(files.values()): write_noise(path, 100 + k)
    return Spec('shoes', root, files, [(r, t, [c] if c else []) for t, r, c in pairs], {'original': sorted(evals)},
                train=[(r, t) for t, r, _ in train])

def fashion200k_faults(root: Path) -> Spec:
    "Fashion200k: 12 test images over 5 descriptions, 5 test queries (one whose source is its target), 4 train images."
    words = ['white lace dress', 'black lace dress', 'white silk dress', 'green lace dress', 'black silk dress']
    test = [(f'women/dresses/day/b_{k}/b_{k}_0.jpeg', words[k % 5]) for k in range(12)]
    train = [(f'women/dresses/casual/a_{k}/a_{k}_0.jpeg', d) for k, d in enumerate(['red midi dress', 'blue midi dress', 'red maxi dress', 'red midi dress'])]
    p = [path for path, _ in test]
    queries = [(p[0], p[1]), (p[2], p[4]), (p[5], p[8]), (p[6], p[9]), (p[10], p[10])]
    write_fashion200k(root, {'train': train, 'test': test}, queries)
    files = {path: root/path for path, _ in train + test}
    for k, path in enumerate(files.values()): write_noise(path, 200 + k)
    d = dict(test)
    pairs = [(s, t, [replace_words(d[s], d[t])] if d[s] != d[t] else []) for s, t in queries]
    return Spec('fashion200k', root, files, pairs, {'tirg': p, 'released': p}, d)

def replace_words(source: str, target: str) -> str:
    "Fashion200k's text: 'replace X with Y', X the source's words the target lacks, Y the reverse."
    s, t = source.split(), target.split()
    return f"replace {' '.join(w for w in s if w not in t)} with {' '.join(w for w in t if w not in s)}"
