"""The documentation site, built as `make docs` builds it, read in a real browser with every network lookup blocked.

Headless Debian `chromium` loads the home page and each notebook's page from a server on 127.0.0.1 and dumps the DOM
after MathJax has run. Without chromium the tests skip (`apt-get install chromium`); under CI (`CI` set) they fail.
"""
import functools, http.server, json, os, re, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path
import pytest
from conftest import ROOT
from test_readme import load_build

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
HIDDEN = {'hide', 'export', 'exporti', 'default_exp'}   # directives whose cells never reach the site

def browser():
    "The headless browser's path; skip (or fail under CI) when there is none."
    path = next(filter(None, map(shutil.which, BROWSERS)), None)
    if not path:
        msg = 'no chromium installed: the site is not tested in a browser (apt-get install chromium)'
        if os.environ.get('CI', '').lower() not in ('', '0', 'false'): pytest.fail(msg + '; CI is set, so this is a failure')
        pytest.skip(msg)
    return path

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the site into a temporary folder and serve it on 127.0.0.1: (base URL, folder)."
    browser()   # skip before the build when the browser is missing
    out = tmp_path_factory.mktemp('site')
    res = subprocess.run([sys.executable, str(ROOT/'nbs'/'_site'/'build.py'), '--out', str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, f'the site build failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}'
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_port}', out
    server.shutdown()

def dump_dom(url, tmp_path, budget_ms=10000, extra=()) -> str:
    """The page's DOM after its scripts (MathJax) ran, fetched by headless chromium with all lookups but 127.0.0.1 blocked.
    `budget_ms`: the page's (virtual) time to run; `extra`: more chromium options (`--screenshot=…`)."""
    cmd = [browser(), '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-extensions',
           '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1', f'--user-data-dir={tmp_path/"profile"}',
           f'--virtual-time-budget={budget_ms}', *extra, '--dump-dom', url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and '</html>' in res.stdout, f'chromium failed on {url}:\n{res.stderr[-3000:]}'
    return res.stdout

class Page(HTMLParser):
    """What the tests look at in a dumped DOM: title, h1, the article's images, links and admonitions, the first words
    of each blockquote, math elements, readable text."""
    SKIP = {'script', 'style', 'pre', 'code', 'mjx-container', 'textarea'}   # text that is not prose
    def __init__(self, dom):
        super().__init__()
        self.title, self.h1, self.images, self.links, self.mathjax, self.math, self.errors = '', [], [], [], 0, 0, 0
        self.admonitions, self.quotes, self._quote = 0, [], False
        self.text, self.all_text, self._stack, self._article = [], [], [], 0
        self.feed(dom)
        self.text, self.all_text = ' '.join(self.text), ' '.join(self.all_text)
    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ('img', 'br', 'hr', 'meta', 'link', 'input'): return self._void(tag, attrs)
        self._stack.append(tag)
        if tag == 'article': self._article += 1
        if tag == 'a' and self._article and attrs.get('href'): self.links.append(attrs['href'])
        if tag == 'mjx-container': self.mathjax += 1
        if tag == 'mjx-merror' or 'data-mjx-error' in attrs: self.errors += 1
        if 'math' in (attrs.get('class') or '').split(): self.math += 1
        if self._article and tag == 'div' and 'admonition' in (attrs.get('class') or '').split(): self.admonitions += 1
        if tag == 'blockquote': self._quote = True
    def _void(self, tag, attrs):
        if tag == 'img' and self._article: self.images.append(attrs.get('src', ''))
    def handle_endtag(self, tag):
        if tag in self._stack:
            while self._stack.pop() != tag: pass
            if tag == 'article': self._article -= 1
    def handle_data(self, data):
        if self._quote and data.strip(): self.quotes.append(data.strip()); self._quote = False
        if 'title' in self._stack: self.title += data
        if 'h1' in self._stack: self.h1.append(data)
        if 'mjx-container' not in self._stack and not {'script', 'style'} & set(self._stack): self.all_text.append(data)
        if not self.SKIP & set(self._stack): self.text.append(data)

def directives(code): return set(re.findall(r'^\s*#\|\s*([\w-]+)', code, re.M))
def squash(text): return re.sub(r'\s+', '', text)

def expectations(proc: Path):
    "For each page: (title, number of images, has math, number of callouts, code of hidden cells) from the notebooks."
    build, nbs = load_build(), ROOT/'nbs'
    for p in build.notebook_order(proc):
        nb = json.loads(p.read_text())
        title = re.search(r'^title:\s*(.+)$', build.src(nb['cells'][0]) if nb['cells'] else '', re.M)
        assert title, f'{p.name} has no title: its first cell should be markdown `# Title` then `> subtitle`'
        title = title[1].strip().strip('"\'')
        shows_output = lambda c: 'false' not in (build.directives(c)[0].get(k) for k in ('output', 'include'))
        images = sum(any(m.startswith('image/') for m in o.get('data', {}))
                     for c in nb['cells'] if c['cell_type'] == 'code' and shows_output(c) for o in c['outputs'])
        images += sum(len(re.findall(r'!\[[^\]]*\]\(|<img ', build.src(c))) for c in nb['cells'] if c['cell_type'] == 'markdown')
        math = any(re.search(r'\$[^$]+\$', build.src(c)) for c in nb['cells'] if c['cell_type'] == 'markdown')
        found = []   # the callouts of the markdown cells
        for c in nb['cells']:
            if c['cell_type'] == 'markdown': build.callouts(build.src(c), lambda *callout: found.append(callout) or '')
        source = json.loads((nbs/p.relative_to(proc)).read_text())   # the notebook before processing: its hidden cells
        is_hidden = lambda c: c['cell_type'] == 'code' and HIDDEN & directives(build.src(c))
        hidden = [squash(build.directives(c)[1]) for c in source['cells'] if is_hidden(c)]
        shown = ' '.join(squash(build.src(c)) for c in source['cells'] if not is_hidden(c))
        yield build.page_name(nb) or p.stem, title, images, math, len(found), [h for h in hidden if h and h not in shown]

def pages():
    "(page, title, images, math, callouts, hidden) for every notebook, read from `_proc/` after the build."
    return list(expectations(ROOT/'_proc'))

@pytest.mark.browser
def test_pages(site, tmp_path):
    url, out = site
    found = pages()
    assert found and found[0][0] == 'index', 'the home page is index.ipynb'
    nbs = [p for p in (ROOT/'nbs').rglob('*.ipynb') if not any(s.startswith(('_', '.')) for s in p.relative_to(ROOT/'nbs').parts)]
    assert len(found) == len(nbs), f'{len(found)} pages for {len(nbs)} notebooks: {[p for p, *_ in found]}'
    problems = []
    for page, title, images, math, callouts, hidden in found:
        dom = Page(dump_dom(f'{url}/{page}.html', tmp_path))
        check = lambda ok, what: ok or problems.append(f'{page}.html: {what}')
        check(title in dom.title and title in ' '.join(dom.h1), f'title {title!r} missing (<title> {dom.title!r}, h1 {dom.h1})')
        check(len(dom.images) == images, f'{len(dom.images)} images, the notebook has {images}')
        check(all((out/src.split('?')[0]).is_file() for src in dom.images), f'an image file is missing: {dom.images}')
        check(not math or dom.mathjax > 0, 'no MathJax output (mjx-container): math did not render')
        check(dom.mathjax == dom.math, f'{dom.math} math elements but {dom.mathjax} rendered by MathJax')
        check(dom.errors == 0, f'{dom.errors} MathJax errors')
        check(dom.admonitions == callouts, f'{dom.admonitions} admonitions, the notebook has {callouts} callouts')
        left = [q for q in dom.quotes if re.match(r'(Note|Tip|Warning|Important|Caution)\b', q)]
        check(not left, f'callouts left as blockquotes: {left[:3]}')
        raw = re.findall(r'\$[^$\s][^$]*\$|\\\(|\\\[', dom.text)
        check(not raw, f'raw TeX left in the text: {raw[:5]}')
        check(not re.search(r'#\||nbdev_export\(|default_exp', dom.all_text), 'nbdev directive or export call shown')
        for code in hidden: check(code not in squash(dom.all_text), f'hidden cell shown: {code[:80]!r}')
        for link in dom.links:   # links inside the site lead to a page that has the anchor
            if re.match(r'[a-z]+:', link): continue
            path, _, anchor = link.partition('#')
            target = out/(path or f'{page}.html')
            check(target.is_file() and (not anchor or f'id="{anchor}"' in target.read_text()), f'broken link {link}')
    assert not problems, '\n'.join(problems)

@pytest.mark.browser
def test_sidebar_and_search(site, tmp_path):
    "The home page's sidebar links every page in nbs/ order; the offline search finds an exported name."
    url, out = site
    found = pages()
    home = (out/'index.html').read_text()
    links = re.findall(r'<a class="reference internal" href="([\w/.-]+)\.html"', home.split('bd-sidebar-primary')[1])
    order = [p for p, *_ in found if p != 'index']
    assert [l for l in links if l in order] == order, f'sidebar {links}, expected {order}'
    dom = Page(dump_dom(f'{url}/search.html?q=whiten', tmp_path))
    assert 'augmenter' in dom.all_text.lower() and 'Search Results' in dom.all_text, 'search found nothing for "whiten"'

def test_stage_maps_quarto_options():
    "The glue turns each Quarto option nbdev leaves behind into what myst-nb renders (no browser needed)."
    def code(source, outputs=()): return {'cell_type': 'code', 'metadata': {}, 'source': source, 'outputs': list(outputs)}
    stream = {'output_type': 'stream', 'name': 'stdout', 'text': 'printed\n'}
    nb = {'metadata': {}, 'cells': [
        {'cell_type': 'raw', 'metadata': {}, 'source': '---\ntitle: T\ndescription: D\noutput-file: t.html\n---'},
        {'cell_type': 'markdown', 'metadata': {}, 'source': '> **Note: Eq. 1**\n>\n> $x$\n> - a\n\n> **Tip**\n> ours\n\n'
         '> a quote\n\n[a](01_x.ipynb#foo) [b](https://cir-unc.github.io/cir_unc/t.html#bar)'},
        code('#| echo: false\n#| output: asis\nshow_doc(f)',
             [{'output_type': 'execute_result', 'data': {'text/markdown': '---\n\n### f_g\n\ndoc', 'text/plain': 'x'}}]),
        code('#| code-fold: true\nx = 1'), code('#| code-fold: show\n#| code-summary: "Exported source"\ny = 2'),
        code('#| echo: false\nplot()', [stream]), code('#| include: false\nsecret()'), code('#| output: false\nz', [stream])]}
    cells = load_build().stage_notebook(nb, {'01_x': 'x'}, 'https://cir-unc.github.io/cir_unc')['cells']
    sources = [c['source'] for c in cells]
    assert sources[0] == '# T\n\n{.nb-description}\nD'
    assert sources[1] == (':::{admonition} Eq. 1\n:class: note\n$x$\n- a\n:::\n\n:::{tip}\nours\n:::\n\n> a quote\n\n'
                          '[a](x.html#foo) [b](t.html#bar)')
    assert sources[2] == '<hr class="doc-rule">\n\n<div id="f_g"></div>\n\n### f_g\n\ndoc'   # Quarto's anchor kept
    assert sources[3] == '<details class="code-fold">\n<summary>Code</summary>\n\n```python\nx = 1\n```\n\n</details>'
    assert sources[4].startswith('<details class="code-fold" open>\n<summary>Exported source</summary>')
    assert cells[5]['source'] == 'plot()' and cells[5]['metadata']['tags'] == ['remove-input'] and cells[5]['outputs']
    assert sources[6:] == ['z'] and cells[6]['outputs'] == []
    assert not any('#|' in s or 'secret' in s for s in sources)
