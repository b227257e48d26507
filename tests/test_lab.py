"""JupyterLab as a reader opens the notebooks: `make lab` on 127.0.0.1 with a token, the notebooks opened in headless
chromium.

Each opened notebook is checked on the rendered page: the callouts are boxes (a blockquote that opens with the bold
title, never a heading), no raw `:::`, `{.callout` or TeX text, the equations typeset by MathJax without errors, every
saved figure shown, the notebook on the Python 3 kernel without a kernel dialog. Without chromium the browser test
skips (`apt-get install chromium`); under CI (`CI` set) it fails, as for the site. `CIR_UNC_SCREENSHOTS=DIR` keeps a
screenshot of each page in DIR (`lab_02_losses.png`). The kernelspec and the callout syntax are checked on every
notebook, without a browser.
"""
import json, os, re, secrets, signal, subprocess, sys, time
from html.parser import HTMLParser
from pathlib import Path
import pytest
from conftest import ROOT, load_site_script
from test_notebooks import notebooks
from test_readme import load_build
from test_site import browser, dump_dom

LAB_NOTEBOOKS = ('index.ipynb', '01_augmenter.ipynb', '02_losses.ipynb')   # opened in the browser: index first

def load_kernelspec():
    "nbs/_site/kernelspec.py, the script that gives every notebook its kernelspec, as a module."
    return load_site_script('kernelspec')

def markdown(nb) -> list: return [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown']

def callouts(md: str) -> list:
    "The (kind, title, body) of each callout in the markdown `md`, as the site and README builds find them."
    found = []
    load_build().callouts(md, lambda *callout: found.append(callout) or '')
    return found

# --- every notebook, no browser -------------------------------------------------------------------------------------

def test_notebooks_have_kernelspec():
    expected, missing = load_kernelspec().KERNELSPEC, []
    for p in notebooks():
        if json.loads(p.read_text()).get('metadata', {}).get('kernelspec') != expected: missing.append(p.name)
    assert not missing, f'no kernelspec (JupyterLab asks for a kernel): {missing}. Fix: python nbs/_site/kernelspec.py'

def test_kernelspec_survives_nbdev_clean(tmp_path):
    "Stamping is idempotent and leaves a clean notebook clean: nbdev_clean keeps the kernelspec as it is written."
    from execnb.nbio import nb2str
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    cfg, ks = get_config(path=ROOT), load_kernelspec()
    def clean(nb):
        keys = [cfg.get(k).split() for k in ('allowed_metadata_keys', 'allowed_cell_metadata_keys')]
        clean_nb(nb, cfg.clear_all, *keys, cfg.clean_ids)
        return nb
    nb = clean({'cells': [{'cell_type': 'markdown', 'id': 'a1', 'metadata': {}, 'source': ['# T']}],
                'metadata': {'language_info': {'name': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5})
    path = tmp_path/'t.ipynb'
    path.write_text(nb2str(nb))
    assert ks.stamp(path) and not ks.stamp(path), 'stamping twice must change the notebook once'
    stamped = path.read_text()
    assert json.loads(stamped)['metadata'] == {'kernelspec': ks.KERNELSPEC}
    assert nb2str(clean(json.loads(stamped))) == stamped, 'nbdev_clean changes a stamped notebook'
    assert ks.notebooks(ROOT/'nbs') and (ROOT/'index.ipynb').resolve() in ks.notebooks(ROOT/'nbs')

def callout_problems(md: str) -> list:
    """What keeps the markdown `md` from rendering the same in JupyterLab and on the site: a Quarto callout (`:::`),
    a heading inside a callout (it would join the table of contents), `$$…$$` over several lines in a callout
    (JupyterLab would read the `> ` of the next lines as TeX), a line right after a callout (Markdown pulls it into the
    box in JupyterLab, not on the site), a blockquote opening with `**Word: …**` whose Word is no callout kind."""
    build, problems = load_build(), []
    if re.search(r'^ {0,3}:::|\{\.callout', md, re.M): problems.append('Quarto callout (`:::`)')
    for kind, title, body in callouts(md):
        if re.search(r'^ {0,3}#{1,6} ', body, re.M): problems.append(f'heading inside the callout {title!r}')
        if any(line.count('$$') % 2 for line in body.splitlines()):
            problems.append(f'$$…$$ over several lines in the callout {title!r}')
    rest = build.callouts(md, lambda *_: '\0')
    if re.search(r'\0\n[^\n]', rest): problems.append('a line right after a callout: leave a blank line')
    if m := re.search(r'^ {0,3}> ?\*\*(\w+):[^*]*\*\*\s*$', rest, re.M):
        problems.append(f'unknown callout kind {m[1]!r} (Note, Tip, Warning, Important, Caution)')
    return problems

def test_callout_syntax():
    "Every notebook writes callouts as blockquotes opening with `**Kind: Title**`, in the form both renderers agree on."
    bad = '::: {.callout-note}\nx\n:::\n\n> **Note: A**\n> ## H\n> $$a\n> b$$\nlazy\n\n> **Remark: B**\n> c'
    assert len(callout_problems(bad)) == 5 and not callout_problems('> subtitle\n\n> **Tip**\n>\n> $$x$$ y\n\ntext')
    problems = [f'{p.name}: {md.splitlines()[0][:60]!r}…: {problem}'
                for p in notebooks() for md in markdown(json.loads(p.read_text())) for problem in callout_problems(md)]
    assert not problems, '\n'.join(problems)

# --- JupyterLab in a browser ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "`make lab` on 127.0.0.1, a free port and a new token, settings and workspace in a temporary folder: (URL, token)."
    browser()   # skip before starting JupyterLab when the browser is missing
    tmp = tmp_path_factory.mktemp('lab')
    news = tmp/'settings'/'@jupyterlab'/'apputils-extension'   # no "get notified about Jupyter news?" toast
    news.mkdir(parents=True)
    (news/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    token, runtime, log = secrets.token_hex(16), tmp/'runtime', tmp/'lab.log'
    args = (f'--no-browser --ServerApp.port=0 --IdentityProvider.token={token} '
            f'--LabApp.user_settings_dir={tmp/"settings"} --LabApp.workspaces_dir={tmp/"workspaces"}')
    with open(log, 'w') as out:
        proc = subprocess.Popen(['make', '-s', 'lab', f'PYTHON={sys.executable}', f'LAB_ARGS={args}'], cwd=ROOT,
                                env={**os.environ, 'JUPYTER_RUNTIME_DIR': str(runtime)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not (info := sorted(runtime.glob('jpserver-*.json'))):   # JupyterLab writes it once it listens
            assert proc.poll() is None, f'make lab exited ({proc.returncode}):\n{log.read_text()[-3000:]}'
            assert time.time() < deadline, f'JupyterLab did not start in 180 s:\n{log.read_text()[-3000:]}'
            time.sleep(0.5)
        server = json.loads(info[0].read_text())
        assert server['hostname'] == '127.0.0.1' and Path(server['root_dir']) == ROOT/'nbs', server
        yield server['url'].rstrip('/'), token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # make and JupyterLab, which shuts its kernels down
        for _ in range(60):
            if not list(runtime.glob('jpserver-*.json')): break
            time.sleep(0.5)
        proc.wait(10)

class LabPage(HTMLParser):
    """What the test looks at in JupyterLab's DOM: in the notebook, its cells, h1, images, MathJax elements, the text of
    rendered markdown (code and math left out), the first words of each blockquote and whether they are bold; headings
    inside blockquotes; anywhere, dialogs and the kernel named in the toolbar."""
    VOID = {'img', 'br', 'hr', 'meta', 'link', 'input', 'source', 'wbr', 'area', 'col', 'embed', 'param', 'track'}
    def __init__(self, dom):
        super().__init__()
        self.cells, self.h1, self.images, self.mathjax, self.errors, self.dialogs = 0, [], [], 0, 0, 0
        self.text, self.quotes, self.quote_headings, self.kernel, self._stack, self._quote = [], [], 0, None, [], False
        self.feed(dom)
        self.text = ' '.join(self.text)
    def inside(self, cls): return any(cls in c for _, c in self._stack)
    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get('class') or '').split())
        if 'jp-Dialog' in classes: self.dialogs += 1
        if 'jp-Toolbar-kernelName' in classes: self.kernel = attrs.get('aria-label')
        if self.inside('jp-Notebook'):
            if 'jp-Notebook-cell' in classes: self.cells += 1
            if tag == 'img': self.images.append(attrs.get('src') or '')
            if tag == 'mjx-container': self.mathjax += 1
            if tag == 'mjx-merror': self.errors += 1
            if tag == 'blockquote': self._quote = True
            if re.fullmatch(r'h[1-6]', tag) and any(t == 'blockquote' for t, _ in self._stack): self.quote_headings += 1
        if tag not in self.VOID: self._stack.append((tag, classes))
    def handle_endtag(self, tag):
        if any(t == tag for t, _ in self._stack):
            while self._stack.pop()[0] != tag: pass
    def handle_data(self, data):
        if not self.inside('jp-Notebook'): return
        tags = {t for t, _ in self._stack}
        if self._quote and data.strip():
            self.quotes.append((data.strip(), 'strong' in tags)); self._quote = False
        if 'h1' in tags: self.h1.append(data.strip())
        if self.inside('jp-RenderedMarkdown') and not {'code', 'pre', 'mjx-container', 'script', 'style'} & tags:
            self.text.append(data)

def expected(nb):
    "From the notebook: (title, cells, callouts, images, has math)."
    md = markdown(nb)
    title = next((m[1].strip() for s in md if (m := re.search(r'^# +(.+)$', s, re.M))), None)
    outputs = [o for c in nb['cells'] for o in c.get('outputs', [])]
    images = sum(any(k.startswith('image/') for k in o.get('data', {})) for o in outputs)
    images += sum(len(re.findall(r'!\[[^\]]*\]\(|<img ', s)) for s in md)
    math = any(re.search(r'\$[^$]+\$', s) for s in md)
    return title, len(nb['cells']), sum(len(callouts(s)) for s in md), images, math

def lab_kernel_name() -> str:
    "What JupyterLab's toolbar calls the notebooks' kernel: the installed `python3` kernel's display name."
    from jupyter_client.kernelspec import KernelSpecManager
    return KernelSpecManager().get_kernel_spec(load_kernelspec().KERNELSPEC['name']).display_name

@pytest.mark.browser
def test_lab_pages(lab, tmp_path):
    url, token = lab
    shots = Path(os.environ.get('CIR_UNC_SCREENSHOTS') or tmp_path)
    kernel, problems = lab_kernel_name(), []
    for name in LAB_NOTEBOOKS:
        # the index is what JupyterLab opens on; the others are opened by their path, in a fresh workspace
        page = f'{url}/?token={token}' if name == 'index.ipynb' else f'{url}/lab/tree/{name}?token={token}&reset'
        extra = ['--window-size=1280,2400', '--hide-scrollbars', f'--screenshot={shots/f"lab_{Path(name).stem}.png"}']
        dom = LabPage(dump_dom(page, tmp_path, budget_ms=30000, extra=extra))
        title, cells, n_callouts, images, math = expected(json.loads((ROOT/'nbs'/name).read_text()))
        check = lambda ok, what: ok or problems.append(f'{name}: {what}')
        check(title in dom.h1, f'title {title!r} not shown as the notebook h1 ({dom.h1[:3]}): not opened?')
        check(dom.cells == cells, f'{dom.cells} cells shown, the notebook has {cells}')
        check(dom.dialogs == 0, 'a dialog is open (kernel selection?)')
        check(dom.kernel == kernel, f'kernel shown {dom.kernel!r}, expected {kernel!r}')
        raw = re.findall(r':::|\{\.callout[^}]*\}', dom.text)
        check(not raw, f'raw callout syntax shown: {raw[:3]}')
        boxes = [t for t, bold in dom.quotes if bold and re.match(r'(Note|Tip|Warning|Important|Caution)\b', t)]
        check(len(boxes) == n_callouts, f'{len(boxes)} callout boxes shown ({boxes}), the notebook has {n_callouts}')
        check(dom.quote_headings == 0, f'{dom.quote_headings} headings inside blockquotes')
        tex = re.findall(r'\$[^$\s][^$]*\$|\\\(|\\\[', dom.text)
        check(not tex, f'raw TeX shown: {tex[:3]}')
        check(not math or dom.mathjax > 0, 'no MathJax output (mjx-container): equations not typeset')
        check(dom.errors == 0, f'{dom.errors} MathJax errors')
        check(len(dom.images) == images, f'{len(dom.images)} images shown, the notebook has {images}')
        check(all(s.startswith('data:image/') for s in dom.images), f'empty images: {[s[:40] for s in dom.images]}')
    assert not problems, '\n'.join(problems)
