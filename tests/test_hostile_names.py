"""Names from data files never leave the data folder.

The cases follow the published formats. An image id is joined onto a folder: FashionIQ's `images/{ASIN}.jpg` (flat) and
`image_data/{cat}/{ID}.jpg` (the released code's `cat/ID.jpg` lines), Shoes' file names, Fashion200k's `women/…` paths
(label files and test queries), CIRR's `./dev/….png` paths below `img_raw/` (split maps), and the ASINs of
`cir_unc_get_data`'s annotations and URL lists. A plain name may hold no `/` or `\\`, is not `.` or `..`, not absolute,
holds no control character (NUL among them) and has at most 200 bytes; a path a format allows is relative, with no `..`
part. Each hostile name below must stop the reader or the command with its stated error — one line naming the file,
the record and the name — before any image is opened, fetched or written: nothing outside the data folder is written
(the folders around it are listed before and after) or opened (an audit hook records every file opened), and the
images there before are untouched. For the download: a body past the size cap, and a redirect loop, each reported as
such. Decoy images sit where the hostile names point, so a reader that obeyed them would find decodable images."""
import json, os, shutil, subprocess, sys
from contextlib import contextmanager
from pathlib import Path
import pytest
from PIL import Image
from cir_unc.datasets import DataError, read_fashion200k, read_fashioniq, read_shoes
from cir_unc.cirr import read_cirr
from cir_unc.get_data import MAX_IMAGE_BYTES, MAX_SOURCE_BYTES, REPORT, get_data_cli
from fixtures import make_fashion200k_fixture, make_fashioniq_fixture, make_shoes_fixture, write_image
from test_get_data import FAST, get_args, image_requests, script, server   # noqa: F401  (server: the loopback fixture)

# ------------------------------------------------------------------------------------------------ what is watched
_opened = None                     # a list while a reader or command runs under `watch()`

def _audit(event, args):
    "Record every file opened and every folder listed (audit events of the interpreter), while watched."
    if _opened is not None and event in ('open', 'os.listdir', 'os.scandir') and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.path.abspath(os.fsdecode(args[0])))      # lexically: `root/images/../../x` is outside root

sys.addaudithook(_audit)

@contextmanager
def watch():
    global _opened
    _opened = []
    try: yield _opened
    finally: _opened = None

def inside(path, folder) -> bool: return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)

def listing(base: Path, root: Path) -> dict:
    "Every file and folder below `base` except those in `root`: path → (size, mtime_ns); files in `root`'s image folders too."
    out = {}
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            p = Path(folder)/name
            if not inside(p, root) or p.suffix.lower() in ('.jpg', '.jpeg', '.png'):
                st = p.lstat(); out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out

SUFFIXES = ('.jpg', '.jpeg', '.png')

def place(tmp_path: Path, decoys: bool = True) -> tuple[Path, Path]:
    "(base, root): the data root three folders below `base`; with `decoys`, a decodable image at every place a `../` name reaches."
    root = tmp_path/'a'/'b'/'root'
    root.mkdir(parents=True)
    for folder in (tmp_path, tmp_path/'a', tmp_path/'a'/'b') if decoys else ():
        for s in SUFFIXES: write_image(folder/f'escape{s}', (250, 0, 0))
    return tmp_path, root

def expect_refusal(call, base: Path, root: Path, file: str, record: str, name, fault: str, also_allowed=()):
    "`call()` raises one line naming `file`, `record`, `name` and `fault`; nothing outside `root` opened or changed."
    before = listing(base, root)
    with watch() as opened, pytest.raises(DataError) as info: call()
    message = str(info.value)
    assert '\n' not in message and file in message and record in message and f'refused, {fault}' in message, message
    assert repr(name)[:40] in message, message
    outside = [p for p in opened if inside(p, base) and not inside(p, root) and not any(inside(p, a) for a in also_allowed)]
    assert not outside, outside
    assert listing(base, root) == before
    return message

# ------------------------------------------------------------------------------------------------ the hostile names
def plain_names(base: Path, suffix: str, depth: int) -> dict:
    "kind → (a hostile image name where a plain name is expected, the fault stated); `depth` ../ parts reach a decoy."
    return {'dotdot': ('../' * depth + 'escape', 'a ".." part leaves the data folder'), 'parent': ('..', 'a ".." part leaves the data folder'),
            'absolute': (str(base/'escape'), 'it is an absolute path'), 'slash': ('sub/escape', 'it contains "/" or "\\"'),
            'backslash': ('sub\\escape', 'it contains "/" or "\\"'), 'nul': ('esc\x00ape', 'it contains a control character'),
            'long': ('A' * 201, 'it is longer than 200 bytes')}

def path_names(base: Path, suffix: str, prefix: str, depth: int) -> dict:
    "kind → (a hostile relative path where the format allows one, the fault stated)."
    return {'dotdot': ('../' * depth + f'escape{suffix}', 'a ".." part leaves the data folder'),
            'inner-dotdot': (prefix + '../' * (depth + 1) + f'escape{suffix}', 'a ".." part leaves the data folder'),
            'absolute': (str(base/f'escape{suffix}'), 'it is an absolute path'),
            'backslash': (prefix + f'sub\\escape{suffix}', 'it contains "\\"'),
            'nul': (prefix + f'esc\x00ape{suffix}', 'it contains a control character'),
            'long-part': (prefix + 'A' * 201 + suffix, 'a part is longer than 200 bytes'),
            'long-path': (prefix + '/'.join(['A' * 100] * 11) + suffix, 'it is longer than 1024 bytes')}

def edit_json(path: Path, change):
    value = json.loads(path.read_text(encoding='utf-8')); change(value); path.write_text(json.dumps(value), encoding='utf-8')

def edit_line(path: Path, n: int, change):
    lines = path.read_text(encoding='utf-8').split('\n'); lines[n - 1] = change(lines[n - 1]); path.write_text('\n'.join(lines), encoding='utf-8')

def untouched(root: Path) -> dict:
    "The images under `root`: path → bytes (compared before and after)."
    return {p: p.read_bytes() for p in root.rglob('*') if p.suffix in SUFFIXES}

# ------------------------------------------------------------------------------------------------ FashionIQ, flat
FIQ_FLAT = {'target': ('captions/cap.dress.val.json', 'record 1 "target"', lambda v, x: v[0].update(target=x)),
            'candidate': ('captions/cap.dress.val.json', 'record 2 "candidate"', lambda v, x: v[1].update(candidate=x)),
            'split': ('image_splits/split.dress.val.json', 'entry 5', lambda v, x: v.__setitem__(4, x))}

@pytest.mark.parametrize('kind', plain_names(Path('/'), '', 3))
@pytest.mark.parametrize('site', FIQ_FLAT)
def test_fashioniq_flat(tmp_path, site, kind):
    base, root = place(tmp_path)
    make_fashioniq_fixture(root, 'flat')
    read_fashioniq(root, progress=False)                     # the images verified (and their verdicts cached) first
    images = untouched(root)
    file, record, change = FIQ_FLAT[site]
    name, fault = plain_names(base, '.jpg', 3)[kind]         # images/../../../escape.jpg is a decoy
    edit_json(root/file, lambda v: change(v, name))
    expect_refusal(lambda: read_fashioniq(root, progress=False), base, root, file, record, name, fault)
    assert untouched(root) == images


# ------------------------------------------------------------------------------------------------ FashionIQ, released layout
@pytest.mark.parametrize('kind', path_names(Path('/'), '.jpg', 'dress/', 3))
@pytest.mark.parametrize('column', [1, 2])
def test_fashioniq_released(tmp_path, column, kind):
    base, root = place(tmp_path)
    make_fashioniq_fixture(root, 'released')
    read_fashioniq(root, progress=False)
    images = untouched(root)
    name, fault = path_names(base, '.jpg', 'dress/', 3)[kind]
    file = 'captions_pairs/fashion_iq-val-cap-dress.txt'
    edit_line(root/file, 2, lambda line: ';'.join(name if k == column - 1 else p for k, p in enumerate(line.split(';', 2))))
    expect_refusal(lambda: read_fashioniq(root, progress=False), base, root, file, f'{file}:2', name, fault)
    assert untouched(root) == images

def test_fashioniq_released_keeps_the_stem(tmp_path):
    "The released layout names images `cat/ID.jpg`: the id is the stem, read below `image_data/cat/`."
    root = make_fashioniq_fixture(tmp_path/'root', 'released')
    data = read_fashioniq(root, progress=False)
    assert {'A1', 'A2'} <= set(data.images.paths) and all(inside(p, root/'image_data') for p in data.images.paths.values())


# ------------------------------------------------------------------------------------------------ Shoes
SHOES = {'target': ('relative_captions_shoes.json', 'record 1 "ImageName"', lambda v, x: v[0].update(ImageName=x)),
         'reference': ('relative_captions_shoes.json', 'record 3 "ReferenceImageName"', lambda v, x: v[2].update(ReferenceImageName=x))}
SHOES_LINES = {'train': ('train_im_names.txt', 2), 'eval': ('eval_im_names.txt', 3)}

@pytest.mark.parametrize('kind', plain_names(Path('/'), '', 3))
@pytest.mark.parametrize('site', [*SHOES, *SHOES_LINES])
def test_shoes(tmp_path, site, kind):
    base, root = place(tmp_path)
    make_shoes_fixture(root)
    read_shoes(root, progress=False)
    images = untouched(root)
    name, fault = plain_names(base, '.jpg', 3)[kind]
    name = name if kind in ('parent', 'long') else name + '.jpg'      # Shoes names are file names: img_womens_*.jpg
    if site in SHOES:
        file, record, change = SHOES[site]
        edit_json(root/file, lambda v: change(v, name))
    else:
        file, n = SHOES_LINES[site]
        record = f'{file}:{n}'
        edit_line(root/file, n, lambda line: name)
    expect_refusal(lambda: read_shoes(root, progress=False), base, root, file, record, name, fault)
    assert untouched(root) == images


# ------------------------------------------------------------------------------------------------ Fashion200k
@pytest.mark.parametrize('kind', path_names(Path('/'), '.jpeg', 'women/', 3))
@pytest.mark.parametrize('site', ['labels', 'queries'])
def test_fashion200k(tmp_path, site, kind):
    base, root = place(tmp_path)
    make_fashion200k_fixture(root)
    read_fashion200k(root, progress=False)
    images = untouched(root)
    name, fault = path_names(base, '.jpeg', 'women/', 3)[kind]     # ../../../escape.jpeg from the root is a decoy
    file, n = ('labels/dress_test_detect_all.txt', 2) if site == 'labels' else ('test_queries.txt', 1)
    edit_line(root/file, n, lambda line: name + line[line.index('\t' if site == 'labels' else ' '):])
    expect_refusal(lambda: read_fashion200k(root, progress=False), base, root, file, f'{file}:{n}', name, fault)
    assert untouched(root) == images


# ------------------------------------------------------------------------------------------------ CIRR
def write_cirr(root: Path):
    "A tiny CIRR in the published layout: per split one image set of six, two pairs; train images in numbered folders."
    for split, prefix in (('train', 'train'), ('val', 'dev')):
        names = [f'{prefix}-{k}-0-img{k % 2}' for k in range(6)]
        files = {n: (f'./train/{k % 2}/{n}.png' if split == 'train' else f'./dev/{n}.png') for k, n in enumerate(names)}
        for k, (n, rel) in enumerate(files.items()): write_image(root/'img_raw'/rel, (30 * k, 90, 60))
        records = [{'pairid': 100 * (split == 'val') + j, 'reference': names[r], 'caption': f'make it number {t}',
                    'img_set': {'id': 0, 'members': names, 'reference_rank': r, 'target_rank': t},
                    'target_hard': names[t], 'target_soft': {names[t]: 1.0, names[5]: -1.0}} for j, (r, t) in enumerate([(0, 1), (2, 3)])]
        for folder, stem, content in (('captions', 'cap', records), ('image_splits', 'split', files)):
            (root/folder).mkdir(parents=True, exist_ok=True)
            (root/folder/f'{stem}.rc2.{split}.json').write_text(json.dumps(content))
    return root

def _rename_key(mapping: dict, old: str, new: str):
    items = [(new if k == old else k, v) for k, v in mapping.items()]; mapping.clear(); mapping.update(items)

CIRR_PLAIN = {'split-name': ('image_splits/split.rc2.val.json', 'entry 2', lambda v, x: _rename_key(v, 'dev-1-0-img1', x)),
              'reference': ('captions/cap.rc2.val.json', 'record 1 "reference"', lambda v, x: v[0].update(reference=x)),
              'member': ('captions/cap.rc2.val.json', 'record 2 "img_set"', lambda v, x: v[1]['img_set']['members'].__setitem__(4, x)),
              'target_hard': ('captions/cap.rc2.train.json', 'record 2 "target_hard"', lambda v, x: v[1].update(target_hard=x)),
              'target_soft': ('captions/cap.rc2.val.json', 'record 1 "target_soft"', lambda v, x: v[0]['target_soft'].update({x: 0.5}))}

@pytest.mark.parametrize('kind', plain_names(Path('/'), '', 3))
@pytest.mark.parametrize('site', CIRR_PLAIN)
def test_cirr_names(tmp_path, site, kind):
    base, root = place(tmp_path)
    write_cirr(root)
    read_cirr(root, progress=False)
    images = untouched(root)
    file, record, change = CIRR_PLAIN[site]
    name, fault = plain_names(base, '.png', 3)[kind]
    edit_json(root/file, lambda v: change(v, name))
    expect_refusal(lambda: read_cirr(root, progress=False), base, root, file, record, name, fault)
    assert untouched(root) == images

@pytest.mark.parametrize('kind', path_names(Path('/'), '.png', './dev/', 3))
def test_cirr_paths(tmp_path, kind):
    base, root = place(tmp_path)
    write_cirr(root)
    read_cirr(root, progress=False)
    images = untouched(root)
    name, fault = path_names(base, '.png', './dev/', 3)[kind]        # img_raw/../../../escape.png is a decoy
    file = 'image_splits/split.rc2.val.json'
    edit_json(root/file, lambda v: v.update({'dev-3-0-img1': name}))
    expect_refusal(lambda: read_cirr(root, progress=False), base, root, file, 'entry 4', name, fault)
    assert untouched(root) == images


# ------------------------------------------------------------------------------------------------ a linked image folder still works
def test_linked_image_folders_still_work(tmp_path):
    "Paths are judged by their text, not resolved on disk: `images/` or `img_raw/` may be a symbolic link to another disk."
    fiq, cirr = make_fashioniq_fixture(tmp_path/'fiq', 'flat'), write_cirr(tmp_path/'cirr')
    expected = (len(read_fashioniq(fiq, progress=False).train), len(read_cirr(cirr, progress=False).train))
    for root, folder in ((fiq, 'images'), (cirr, 'img_raw')):
        shutil.move(root/folder, tmp_path/f'elsewhere-{folder}')
        (root/folder).symlink_to(tmp_path/f'elsewhere-{folder}', target_is_directory=True)
    assert (len(read_fashioniq(fiq, progress=False).train), len(read_cirr(cirr, progress=False).train)) == expected
    assert all(expected)


# ------------------------------------------------------------------------------------------------ cir_unc_get_data
GET_SITES = {'target': ('captions/cap.dress.val.json', 'record 1 "target"', lambda v, x: v[0].update(target=x)),
             'candidate': ('captions/cap.shirt.train.json', 'record 1 "candidate"', lambda v, x: v[0].update(candidate=x)),
             'split': ('image_splits/split.toptee.val.json', 'entry 5', lambda v, x: v.__setitem__(4, x)),
             'url list': ('asin2url.dress.txt', 'asin2url.dress.txt:2', None)}

def _fetched_root(server, tmp_path) -> tuple[Path, Path, dict]:
    "(base, root, images): a data root filled by a run without faults, and its verified images; no decoys: a name obeyed would write one."
    base, root = place(tmp_path, decoys=False)
    server.faults = {}
    assert get_data_cli(get_args(server, root)) == 0
    images = untouched(root)
    assert len(images) == 23                               # shirt_A9 is in no URL list
    return base, root, images

@pytest.mark.parametrize('site', GET_SITES)
def test_get_data_names(server, tmp_path, capsys, site):
    base, root, images = _fetched_root(server, tmp_path)
    for kind, (name, fault) in plain_names(base, '.jpg', 3).items():
        source = tmp_path/f'source-{kind}'                      # the annotations as published, with one hostile name
        shutil.copytree(server.source, source)
        lists = dict(server.lists)
        file, record, change = GET_SITES[site]
        lines = server.lists['asin2url.dress.txt'].decode().split('\n')   # the URL list names it too: obeyed, it would be fetched
        lines[1] = f'{name} \t {server.base}/img/A2.jpg'
        server.lists = {**lists, 'asin2url.dress.txt': '\n'.join(lines).encode()}
        if change: edit_json(source/file, lambda v: change(v, name))
        args = get_args(server, root)
        args[args.index('--annotations-from') + 1] = str(source)
        server.requests.clear(); capsys.readouterr()
        before = listing(base, root)
        with watch() as opened: code = get_data_cli(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (kind, err)
        assert file in err[0] and record in err[0] and f'refused, {fault}' in err[0] and repr(name)[:40] in err[0], (kind, err[0])
        assert not image_requests(server), kind                  # nothing fetched
        assert listing(base, root) == before, kind               # nothing written, outside the root or among its images
        assert not [p for p in opened if inside(p, base) and not inside(p, root) and not inside(p, source)], kind
        assert untouched(root) == images, kind
        server.lists = lists

def test_get_data_oversized_and_redirect_loop(server, tmp_path):
    """An image body past the cap (announced, or streamed without a length) is refused as 'too large'; a redirect loop is not
    retried; a redirect to a local file is not followed."""
    base, root = place(tmp_path)
    server.faults = {'A1': 'big', 'A2': 'big-chunked', 'A3': 'loop', 'A4': 'to-file'}
    (root/'images').mkdir()
    before = listing(base, root)
    assert get_data_cli(get_args(server, root)) == 0
    failures = json.loads((root/REPORT).read_text())['failures']
    assert {a: f['reason'] for a, f in failures.items() if a in server.faults} == {'A1': 'too large', 'A2': 'too large', 'A3': 'redirect loop',
                                                                                 'A4': 'bad url'}
    assert failures['A1']['detail'] == failures['A2']['detail'] == f'more than {MAX_IMAGE_BYTES:,} bytes'
    assert failures['A3']['attempts'] == 1 and image_requests(server)['A3'] == 21     # 20 redirects followed, then stopped: once
    assert not any((root/'images'/f'{a}.jpg').exists() for a in server.faults)
    assert sorted(p.name for p in (root/'images').iterdir() if p.name.startswith('.')) == []
    assert {p for p in listing(base, root) if not inside(p, root)} == {p for p in before if not inside(p, root)}

@pytest.mark.parametrize('fault', ['big', 'loop', 'big file'])
def test_get_data_source_oversized_or_looping(server, tmp_path, capsys, fault):
    "A URL list whose host announces more than the cap or redirects in a loop, an annotation file past the cap: one line, exit 2, nothing fetched."
    base, root = place(tmp_path)
    if fault == 'big file':                                        # sparse: costs no disk
        with open(server.source/'captions'/'cap.shirt.val.json', 'r+b') as f: f.truncate(MAX_SOURCE_BYTES + 1)
    else: server.list_faults = {'asin2url.shirt.txt': fault}
    before = listing(base, root)
    assert get_data_cli(get_args(server, root)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    file, expected = {'big': ('asin2url.shirt.txt', f'too large (more than {MAX_SOURCE_BYTES:,} bytes)'),
                      'loop': ('asin2url.shirt.txt', 'redirect loop (more than 20 redirects)'),
                      'big file': ('captions/cap.shirt.val.json', f'more than {MAX_SOURCE_BYTES:,} bytes')}[fault]
    assert len(err) == 1 and file in err[0] and expected in err[0], err
    assert not image_requests(server) and listing(base, root) == before


# ------------------------------------------------------------------------------------------------ the two commands, as a user runs them
def test_commands_refuse_an_annotation_naming_dotdot(server, tmp_path):
    "`cir_unc_get_data` and `cir_unc_check_data` on an annotation naming `../x`: exit status 2, one line naming the file and the name."
    base, root = place(tmp_path)
    edit_json(server.source/'captions'/'cap.dress.val.json', lambda v: v[2].update(target='../x'))
    checked_root = make_fashioniq_fixture(tmp_path/'checked', 'flat')
    edit_json(checked_root/'captions'/'cap.dress.val.json', lambda v: v[2].update(target='../x'))
    before = listing(base, root)
    got = subprocess.run(script('cir_unc_get_data') + get_args(server, root), capture_output=True, text=True, timeout=120)
    checked = subprocess.run(script('cir_unc_check_data') + ['--preset', 'fashioniq', '--data-root', str(checked_root)],
                             capture_output=True, text=True, timeout=120)
    for res, file in ((got, str(server.source/'captions'/'cap.dress.val.json')), (checked, str(checked_root/'captions'/'cap.dress.val.json'))):
        err = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(err) == 1, res.stderr
        assert file in err[0] and "'../x'" in err[0] and 'record 3 "target"' in err[0], err[0]
    assert not image_requests(server)
    assert listing(base, root) == before                      # nothing written outside either data root
    assert not (root/'images').exists() and not (root/'captions').exists()
