"""`cir_unc_get_data` against a real HTTP server on 127.0.0.1 (no other network): images, 404s, an HTML page with status
200, a body cut short, a JPEG cut in half, a connection reset and a 503 that succeed on retry, slow responses; the files,
the report, its agreement with `cir_unc_check_data`, the resume, an interrupted run, and the one-line failures.
The server also answers with bodies past the size cap and with redirect loops (used by test_hostile_names.py)."""
import http.server, io, json, shutil, signal, socket, struct, subprocess, sys, threading, time
from collections import Counter
from pathlib import Path
import pytest
from PIL import Image
from cir_unc.get_data import MAX_IMAGE_BYTES, MAX_SOURCE_BYTES, PART, REPORT, Retry, get_data_cli, get_fashioniq

PREFIX = {'dress': '', 'shirt': 'shirt_', 'toptee': 'toptee_'}
ASINS = [PREFIX[c] + i for c in PREFIX for i in ('A1', 'A2', 'A3', 'A4', 'A5', 'A9', 'T1', 'T2')]
SLOW = 1.2                      # seconds a slow response waits before its headers
FAST = Retry(retries=2, backoff=0.05, cap=0.1, timeout=0.6)
FAULTS = {'A2': 'html', 'A4': 'cut', 'A5': 'half-jpeg', 'A9': '404', 'shirt_A1': 'reset-once', 'shirt_A2': '503-once',
          'toptee_A1': 'slow', 'toptee_A2': 'slow-once', 'toptee_A9': '404'}
NO_URL = {'shirt_A9'}           # left out of the URL lists


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'                      # keep-alive, as a real image host
    def log_message(self, *a): pass

    def send(self, status: int, body: bytes, kind: str = 'image/jpeg', length: int | None = None):
        self.send_response(status)
        self.send_header('Content-Type', kind); self.send_header('Content-Length', str(len(body) if length is None else length))
        self.end_headers(); self.wfile.write(body); self.wfile.flush()

    def too_large(self, limit: int, announced: bool):
        "A body of `limit` + 1 MiB: its length announced, or sent in chunks without one (the client hangs up early)."
        self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
        self.send_header(*(('Content-Length', str(limit + 2**20)) if announced else ('Transfer-Encoding', 'chunked')))
        self.end_headers(); self.close_connection = True
        chunk = bytes(2**20)
        for _ in range(limit // 2**20 + 1): self.wfile.write(chunk if announced else b'%x\r\n%s\r\n' % (len(chunk), chunk))
        if not announced: self.wfile.write(b'0\r\n\r\n')

    def redirect_to_itself(self, where: str | None = None):
        self.send_response(302); self.send_header('Location', where or self.path); self.send_header('Content-Length', '0'); self.end_headers()

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests[self.path] += 1
            n = srv.requests[self.path]
        if self.path.startswith('/lists/'):
            name = self.path.split('/')[-1]
            if srv.list_faults.get(name) == 'loop': return self.redirect_to_itself()
            if srv.list_faults.get(name) == 'big': return self.too_large(MAX_SOURCE_BYTES, announced=True)
            return self.send(200, srv.lists[name], 'text/plain') if name in srv.lists else self.send(404, b'', 'text/plain')
        asin = self.path.split('/')[-1].removesuffix('.jpg')
        body, fault = srv.images.get(asin), srv.faults.get(asin)
        if fault == 'loop': return self.redirect_to_itself()
        if fault == 'to-file': return self.redirect_to_itself('file:///etc/passwd')     # a redirect off the web, to a local file
        if fault in ('big', 'big-chunked'): return self.too_large(MAX_IMAGE_BYTES, announced=fault == 'big')
        if fault == 'stall':                           # half the body, then nothing for a long while
            self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
            self.wfile.write(body[:len(body) // 2]); self.wfile.flush(); time.sleep(10); return
        if fault == 'reset-once' and n == 1:           # RST instead of an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            self.connection.close(); self.close_connection = True; return
        if fault == 'slow' or (fault == 'slow-once' and n == 1): time.sleep(SLOW)
        if fault == '503-once' and n == 1: return self.send(503, b'busy', 'text/plain')
        if fault == 'html': return self.send(200, b'<!DOCTYPE html><html><body>Robot check</body></html>', 'text/html')
        if fault == '404' or body is None: return self.send(404, b'not found', 'text/plain')
        if fault == 'cut':                             # Content-Length says more than is sent, then the connection closes
            self.send(200, body[:len(body) // 2], length=len(body)); self.close_connection = True; return
        if fault == 'half-jpeg': return self.send(200, body[:len(body) // 2])
        self.send(200, body)


def write_annotations(folder: Path):
    "The published captions and image splits (train, val) of a tiny FashionIQ: per category, val pairs (A1, A2),"
    "(A3, A4) with one empty caption, (A1, A9); a train pair (T1, T2); a val split A1–A5 and A9."
    for category, p in PREFIX.items():
        pair = lambda r, t, *c: {'candidate': p + r, 'target': p + t, 'captions': list(c)}
        files = {f'captions/cap.{category}.train.json': [pair('T1', 'T2', 'is darker', 'is ünïcode ✓')],
                 f'captions/cap.{category}.val.json': [pair('A1', 'A2', 'is red', 'has stripes'),
                                                       pair('A3', 'A4', '', 'is shorter'), pair('A1', 'A9', 'is blue', 'is longer')],
                 f'image_splits/split.{category}.train.json': [p + 'T1', p + 'T2'],
                 f'image_splits/split.{category}.val.json': [p + i for i in ('A1', 'A2', 'A3', 'A4', 'A5', 'A9')]}
        for name, records in files.items():
            (folder/name).parent.mkdir(parents=True, exist_ok=True)
            (folder/name).write_text(json.dumps(records, ensure_ascii=False), encoding='utf-8')
    return folder

def jpeg(k: int) -> bytes:
    buffer = io.BytesIO(); Image.new('RGB', (64, 48), (k * 10 % 256, 90, 30)).save(buffer, 'JPEG', quality=95)
    return buffer.getvalue()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address): pass      # a client that went away (killed, timed out) is expected


@pytest.fixture
def server(tmp_path):
    "A folder holding the annotations, and a loopback server for the URL lists and the images, with the faults above."
    srv = Server(('127.0.0.1', 0), Handler)
    srv.lock, srv.requests = threading.Lock(), Counter()
    srv.source = write_annotations(tmp_path/'source')
    srv.images = {a: jpeg(k) for k, a in enumerate(ASINS)}
    srv.faults, srv.list_faults = dict(FAULTS), {}
    srv.base = f'http://127.0.0.1:{srv.server_port}'
    srv.lists = {f'asin2url.{c}.txt': ''.join(f'{a} \t {srv.base}/img/{a}.jpg\n' for a in ASINS
                                              if a.startswith(p) and (p or '_' not in a) and a not in NO_URL).encode()
                 for c, p in PREFIX.items()}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown(); srv.server_close()


def image_requests(srv) -> Counter:
    return Counter({p.split('/')[-1][:-4]: n for p, n in srv.requests.items() if p.startswith('/img/')})

def script(name: str) -> list:
    "The installed console script, else the module function in a fresh interpreter."
    found = shutil.which(name)
    if found: return [found]
    module, func = {'cir_unc_get_data': ('cir_unc.get_data', 'get_data_cli'), 'cir_unc_check_data': ('cir_unc.datasets', 'check_data_cli')}[name]
    return [sys.executable, '-c', f'import sys; from {module} import {func}; sys.exit({func}())']

def get_args(srv, root, retry: Retry = FAST, workers: int = 4) -> list:
    return ['fashioniq', '--data-root', str(root), '--urls', f'{srv.base}/lists', '--annotations-from', str(srv.source),
            '--workers', str(workers), '--retries', str(retry.retries), '--backoff', str(retry.backoff),
            '--backoff-cap', str(retry.cap), '--timeout', str(retry.timeout), '--no-progress']

def decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im: im.load()
        return True
    except OSError: return False


def test_fetch_report_agreement_and_resume(server, tmp_path):
    root = tmp_path/'fashioniq'
    (root/'images').mkdir(parents=True)
    (root/'images'/'A3.jpg').write_bytes(b'<html>an old error page</html>')  # there but not an image: fetched again
    (root/'images'/'A1.jpg').write_bytes(server.images['A1'])           # a good copy from elsewhere: decoded, not fetched
    (root/'images'/'A5.jpg').write_bytes(b'garbage')                    # bad, and its URL serves half a JPEG: rejected/
    (root/'images'/f'.A2.jpg.1-2{PART}').write_bytes(b'left by a killed run')

    start = time.perf_counter()
    res = subprocess.run(script('cir_unc_get_data') + get_args(server, root), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    seconds = time.perf_counter() - start

    # the files: every image fetched or there decodes; nothing else is in images/
    report = json.loads((root/REPORT).read_text())
    failed = set(report['failures'])
    assert failed == {'A2', 'A4', 'A5', 'A9', 'shirt_A9', 'toptee_A1', 'toptee_A9'}, report['failures']
    assert sorted(p.name for p in (root/'images').iterdir()) == sorted(f'{a}.jpg' for a in ASINS if a not in failed)
    assert all(decodes(p) for p in (root/'images').iterdir())
    assert (root/'rejected'/'A5.jpg').read_bytes() == b'garbage'
    assert all((root/n).is_file() for n in ('captions/cap.dress.val.json', 'image_splits/split.toptee.train.json', 'image_url/asin2url.shirt.txt'))

    # the report: why each image could not be had, counts, and the pairs that lose an image
    f = report['failures']
    assert (f['A9']['reason'], f['A9']['status']) == ('http', 404) and f['A9']['in'] == ['dress.val']
    assert f['A2']['reason'] == 'not an image' and f['A2']['detail'] == 'an HTML page' and f['A2']['content_type'] == 'text/html'
    assert f['A5']['reason'] == 'not an image' and 'previous' in f['A5']
    assert (f['A4']['reason'], f['A4']['attempts']) == ('truncated', FAST.retries + 1)
    assert (f['toptee_A1']['reason'], f['toptee_A1']['attempts']) == ('timeout', FAST.retries + 1)
    assert f['shirt_A9']['reason'] == 'no url' and f['shirt_A9']['url'] is None
    assert report['failures_by_reason'] == {'HTTP 404': 2, 'not an image': 2, 'truncated': 1, 'no url': 1, 'timeout': 1}
    assert report['images'] == {'named': 24, 'fetched': 16, 'skipped': 1, 'failed': 7}
    lost = {s: {c: x['pairs_losing_an_image'] for c, x in by.items()} for s, by in report['splits'].items()}
    assert lost == {'train': {'dress': 0, 'shirt': 0, 'toptee': 0}, 'val': {'dress': 3, 'shirt': 1, 'toptee': 2}}
    assert report['splits']['val']['dress']['images_not_had'] == 4
    assert report['check_data']['agrees'] and report['notes'][0].startswith('6 test-split files not found')

    # retried exactly as planned: a reset and a 503 once, a slow answer once; final answers never retried
    asked = image_requests(server)
    assert (asked['shirt_A1'], asked['shirt_A2'], asked['toptee_A2']) == (2, 2, 2)
    assert (asked['A2'], asked['A9'], asked['A5'], asked['A3']) == (1, 1, 1, 1) and 'A1' not in asked
    assert seconds < 60

    # cir_unc_check_data, run afterwards as its own process, reports the same losses
    res = subprocess.run(script('cir_unc_check_data') + ['--preset', 'fashioniq', '--data-root', str(root), '--json'],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    checked = json.loads(res.stdout)['splits']
    assert {s: {c: x['pairs'] - x['usable_pairs'] for c, x in by.items()} for s, by in checked.items()} == lost
    assert checked['val']['dress']['corrupt_images'] == 0

    # the resume: no request for a finished image, one more try for each failure that has a URL
    server.requests.clear()
    again = get_fashioniq(root, f'{server.base}/lists', server.source, workers=4, retry=FAST, progress=False)
    assert set(image_requests(server)) == failed - NO_URL
    assert again['images'] == {'named': 24, 'fetched': 0, 'skipped': 17, 'failed': 7}


def test_interrupted_run_leaves_no_partial_file_and_continues(server, tmp_path):
    root = tmp_path/'fashioniq'
    server.faults = {a: 'stall' for a in ('A3', 'A4', 'shirt_A3', 'toptee_A3')}     # mid-body when the signal comes
    # Ctrl-C's default action in the child even when this test runs in a background job, whose shell starts it ignored
    proc = subprocess.Popen(script('cir_unc_get_data') + get_args(server, root, Retry(0, 0.05, 0.1, 2.0), workers=2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not any(image_requests(server)[a] for a in server.faults) and time.time() < deadline: time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and 'run the same command again' in err, err
    images = root/'images'
    assert not list(images.glob(f'*{PART}')) and not list(images.glob('.*'))
    assert all(decodes(p) for p in images.glob('*.jpg'))
    assert not any((images/f'{a}.jpg').exists() for a in server.faults)
    done = {p.stem for p in images.glob('*.jpg')}
    assert {'A1', 'A2'} <= done                                         # fetched before the workers met the stalls

    # a kill -9 cannot run any clean-up: still no half image under a final name
    server.faults = {a: 'stall' for a in ASINS if a not in done}
    proc = subprocess.Popen(script('cir_unc_get_data') + get_args(server, root, Retry(0, 0.05, 0.1, 2.0), workers=2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not any(image_requests(server)[a] for a in server.faults) and time.time() < deadline: time.sleep(0.05)
    proc.kill(); proc.wait(timeout=30)
    assert {p.stem for p in images.glob('*.jpg')} == done and all(decodes(p) for p in images.glob('*.jpg'))

    # run again: it continues, and asks nothing of what was finished before the interruptions
    server.faults, server.requests = dict(FAULTS), Counter()
    report = get_fashioniq(root, f'{server.base}/lists', server.source, workers=4, retry=FAST, progress=False)
    assert not set(image_requests(server)) & done
    assert report['images']['skipped'] == len(done) and report['images']['failed'] == 7 - ('A2' in done)
    assert not list(images.glob(f'.*{PART}'))


@pytest.mark.parametrize('case', ['no folder', 'bad list', 'no network', 'html annotations'])
def test_cannot_run_says_why_in_one_line(server, tmp_path, capsys, case):
    args = get_args(server, tmp_path/'root', Retry(0, 0.01, 0.01, 2.0))
    if case == 'no folder': args[args.index('--urls') + 1] = str(tmp_path/'nowhere')
    if case == 'bad list': server.lists['asin2url.shirt.txt'] = b'<html>Not Found</html>'
    if case == 'no network':
        with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]      # a port nobody listens on
        args[args.index('--urls') + 1] = f'http://127.0.0.1:{port}/lists'
    if case == 'html annotations':
        (server.source/'captions'/'cap.dress.val.json').write_text('<html>rate limited</html>')
    assert get_data_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('cir_unc_get_data: '), err
    expected = {'no folder': 'neither a folder nor an http(s) URL', 'bad list': 'asin2url.shirt.txt:1: expected "ASIN URL"',
                'no network': 'cannot fetch', 'html annotations': 'cap.dress.val.json: not valid JSON'}[case]
    assert expected in err[0]
    assert not image_requests(server)                                    # nothing fetched before the lists were sound


def test_other_datasets_say_where_and_check(tmp_path, capsys):
    shoes = tmp_path/'shoes'
    (shoes/'attributedata'/'womens_pumps'/'0').mkdir(parents=True)
    (shoes/'relative_captions_shoes.json').write_text(json.dumps([{'ImageName': 'img_womens_pumps_2.jpg',
        'ReferenceImageName': 'img_womens_pumps_1.jpg', 'RelativeCaption': 'has a higher heel'}]))
    (shoes/'train_im_names.txt').write_text('img_womens_pumps_1.jpg\nimg_womens_pumps_2.jpg\n')
    (shoes/'eval_im_names.txt').write_text('img_womens_pumps_3.jpg\n')
    for k in (1, 2, 3): (shoes/'attributedata'/'womens_pumps'/'0'/f'img_womens_pumps_{k}.jpg').write_bytes(jpeg(k))
    assert get_data_cli(['shoes', '--data-root', str(shoes)]) == 0
    out = capsys.readouterr().out
    assert 'relative_captions_shoes.json' in out and 'shoes: usable' in out
    assert get_data_cli(['fashion200k', '--data-root', str(tmp_path/'nothing')]) == 2
    captured = capsys.readouterr()
    assert 'test_queries.txt' in captured.out and 'does not exist' in captured.err
