"""Build the documentation site offline, and README.md from index.ipynb.

    python nbs/_site/build.py              # README.md, then the site in _site/ (open _site/index.html)
    python nbs/_site/build.py --out DIR    # only the site, in DIR (README.md untouched: what tests/test_site.py runs)
    python nbs/_site/build.py --readme     # README.md only (no execution; what `make readme` runs)

Quarto cannot run here, so the site is made in three steps:
1. nbdev's own processing (`nbdev.serve.proc_nbs`) writes processed notebooks to `_proc/`: hidden cells removed,
   `show_doc` cells added and run, Quarto options such as `echo: false` left as `#|` comments.
2. `stage` maps what Quarto would have done onto what myst-nb understands (the glue below): front matter → title,
   `echo: false` → hidden input, `output: asis` → markdown, `code-fold` → `<details>`, callouts (a blockquote
   opening with `**Note: Title**`) → admonitions, links to notebooks and to the published site → the pages of this site.
3. Sphinx + myst-nb + sphinx-book-theme render the staged notebooks with their saved outputs (nothing is re-run),
   with a local MathJax (`conf.py` next to this file).
"""
import argparse, configparser, json, os, re, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CALLOUT_KINDS = ('note', 'tip', 'warning', 'important', 'caution')

def settings():
    "The [DEFAULT] section of settings.ini."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']

def src(cell) -> str: return ''.join(cell['source'])

def directives(cell):
    "Leading `#| key: value` lines of a code cell → ({key: value}, source without them)."
    lines, found = src(cell).splitlines(keepends=True), {}
    while lines and (m := re.match(r'\s*#\|\s*([\w-]+):?\s*(.*?)\s*$', lines[0])):
        found[m[1]] = m[2].strip('"\'')
        lines.pop(0)
    return found, ''.join(lines).strip('\n')

_KINDS = '|'.join(k.title() for k in CALLOUT_KINDS)
CALLOUT_RE = re.compile(rf"\*\*(?P<kind>{_KINDS})(?::\s*(?P<title>(?:(?!\*\*).)+))?\*\*\s*")   # `**Kind: Title**`
QUOTE_RE = re.compile(r' {0,3}> ?')

def callouts(md: str, fmt) -> str:
    """Replace each callout by `fmt(kind, title, body)`. A callout is a blockquote whose first line is `**Kind: Title**`
    or `**Kind**` (Kind: Note, Tip, Warning, Important, Caution), which JupyterLab shows as a box with a bold title.
    Other blockquotes, and code blocks, are left as they are."""
    lines, out, i, fenced = md.split('\n'), [], 0, None
    while i < len(lines):
        if (m := re.match(r' {0,3}(`{3,}|~{3,})', lines[i])) and (fenced is None or m[1].startswith(fenced)):
            fenced = m[1] if fenced is None else None   # a fenced code block opens or closes
        if fenced is not None or not QUOTE_RE.match(lines[i]):
            out.append(lines[i]); i += 1; continue
        j = i
        while j < len(lines) and QUOTE_RE.match(lines[j]): j += 1
        quote = [QUOTE_RE.sub('', l, count=1) for l in lines[i:j]]
        if m := CALLOUT_RE.fullmatch(quote[0].strip()):
            out.append(fmt(m['kind'].lower(), m['title'] or '', '\n'.join(quote[1:]).strip('\n')))
        else: out += lines[i:j]
        i = j
    return '\n'.join(out)

def fence(code: str, lang='') -> str:
    "`code` in a fenced block whose fence is longer than any backtick run inside it."
    ticks = '`' * max(3, 1 + max((len(t) for t in re.findall('`+', code)), default=0))
    return f'{ticks}{lang}\n{code}\n{ticks}'

def output_text(out, mimes=('text/markdown', 'text/plain')):
    "The text of a stream output, or of the first of `mimes` an output has; None for others (images, html)."
    if out['output_type'] == 'stream': return ''.join(out['text'])
    data = out.get('data', {})
    return next((''.join(data[m]) for m in mimes if m in data), None)

# --- README.md ---------------------------------------------------------------------------------------------------

def readme_text(nb_path=ROOT/'index.ipynb') -> str:
    "README.md from `nb_path`: hidden cells and directives dropped, callouts as GitHub alerts, outputs kept as text."
    nbs = ROOT/settings()['nbs_path']
    def alert(kind, title, body):
        lines = [f'[!{kind.upper()}]'] + ([f'**{title}**', ''] if title else [])
        return '\n'.join(('> ' + l).rstrip() for l in lines + body.splitlines())
    def link(m):  # links to notebooks are relative to nbs/, the README sits at the root
        return f'](nbs/{m[1]})' if (nbs/m[1].split('#')[0]).exists() and not (ROOT/m[1]).exists() else m[0]
    parts = []
    for cell in json.loads(Path(nb_path).read_text())['cells']:
        if cell['cell_type'] == 'markdown':
            parts.append(re.sub(r'\]\(([^):/]+\.ipynb(?:#[^)]*)?)\)', link, callouts(src(cell), alert)))
        if cell['cell_type'] != 'code': continue
        opts, code = directives(cell)
        if {'hide', 'export', 'exporti', 'default_exp'} & set(opts) or opts.get('include') == 'false': continue
        if opts.get('echo') != 'false' and code: parts.append(fence(code, 'python'))
        if opts.get('output') == 'false': continue
        for out in cell.get('outputs', []):
            text = output_text(out)
            if text is None or not text.strip(): continue
            asis = opts.get('output') == 'asis' or 'text/markdown' in out.get('data', {})
            parts.append(text.strip('\n') if asis else fence(text.rstrip('\n')))
    warning = '<!-- WARNING: generated from index.ipynb by `make readme`; edit index.ipynb, not this file. -->'
    return warning + '\n\n' + '\n\n'.join(p for p in parts if p.strip()) + '\n'

def write_readme():
    (ROOT/'README.md').write_text(readme_text())
    print('wrote README.md')

# --- the site ----------------------------------------------------------------------------------------------------

def page_name(nb) -> str:
    "The page a processed notebook becomes: its `output-file` (what nbdev's Quarto site calls it) without `.html`."
    first = nb['cells'][0] if nb['cells'] else None
    m = re.search(r'^output-file:\s*(\S+?)\.html\s*$', src(first), re.M) if first and first['cell_type'] == 'raw' else None
    return m[1] if m else None

def frontmatter_cell(cell):
    "A markdown title cell (`# title` + description) from nbdev's front-matter raw cell."
    import yaml
    meta = yaml.safe_load(src(cell).strip().strip('-')) or {}
    md = f"# {meta.get('title', '')}"
    if meta.get('description'): md += f"\n\n{{.nb-description}}\n{meta['description']}"
    return md

def md_cell(text): return {'cell_type': 'markdown', 'metadata': {}, 'source': text}

def stage_markdown(md: str, names: dict, site_url: str) -> str:
    "Notebook markdown → MyST: callouts, link attributes, links to notebooks and to the published site."
    def admonition(kind, title, body):
        colons = ':' * max(3, 1 + max((len(c) for c in re.findall(r'^:{3,}', body, re.M)), default=0))
        head = f'{colons}{{admonition}} {title}\n:class: {kind}' if title else f'{colons}{{{kind}}}'
        return f'{head}\n{body}\n{colons}'
    md = callouts(md, admonition)
    md = re.sub(r'(\]\([^)]*\))\{[^}]*float: *right[^}]*\}', r'\1{.source-link}', md)   # show_doc's [source] link
    md = md.replace(f'({site_url}/', '(')
    def page(m):  # `01_augmenter.ipynb#Whitening` (a heading as JupyterLab names it, spaces as -) → `augmenter.html#whitening`
        from docutils.nodes import make_id
        anchor = '' if not m[2] else f'#{m[2]}' if m[2] == m[2].lower() else f'#{make_id(m[2])}'   # show_doc ids stay
        return f']({names.get(Path(m[1]).name, m[1])}.html{anchor})'
    return re.sub(r'\]\(([^):/#]+)\.ipynb(?:#([^)]*))?\)', page, md)

def quarto_anchor(heading):
    "A show_doc heading, preceded by the anchor Quarto gives it (`#info_nce`) when Sphinx's differs (`#info-nce`)."
    from docutils.nodes import make_id
    name = heading[1].lower()
    return heading[0] if make_id(name) == name else f'<div id="{name}"></div>\n\n{heading[0]}'

def stage_notebook(nb, names, site_url):
    "The processed notebook `nb` with nbdev's Quarto options turned into what myst-nb renders."
    cells = []
    for cell in nb['cells']:
        if cell['cell_type'] == 'raw' and src(cell).startswith('---'):
            cells.append(md_cell(frontmatter_cell(cell))); continue
        if cell['cell_type'] == 'markdown':
            cells.append(md_cell(stage_markdown(src(cell), names, site_url))); continue
        if cell['cell_type'] != 'code': continue
        opts, code = directives(cell)
        if opts.get('include') == 'false': continue
        cell = {**cell, 'source': code, 'metadata': {**cell['metadata'], 'tags': []}}
        after = []   # cells that follow the code
        if opts.get('output') == 'false': cell['outputs'] = []
        if opts.get('output') == 'asis':   # the outputs are markdown (show_doc): render them as page content
            text = '\n\n'.join(t for o in cell['outputs'] if (t := output_text(o)) is not None)
            text = re.sub(r'\A---\n', '<hr class="doc-rule">\n', text)   # a rule may open a section in HTML, not in docutils
            text = re.sub(r'^#+ +([\w.]+) *$', quarto_anchor, text, flags=re.M)
            cell['outputs'], after = [], [md_cell(stage_markdown(text, names, site_url))]
        if 'code-fold' in opts and opts.get('echo') != 'false':   # code in a <details>, open for `show`
            is_open = ' open' if opts['code-fold'] == 'show' else ''
            cells.append(md_cell(f'<details class="code-fold"{is_open}>\n<summary>{opts.get("code-summary", "Code")}'
                                 f'</summary>\n\n{fence(code, "python")}\n\n</details>'))
            opts['echo'] = 'false'
        if opts.get('echo') == 'false': cell['metadata']['tags'].append('remove-input')
        if cell['outputs'] or 'remove-input' not in cell['metadata']['tags']: cells.append(cell)
        cells += after
    meta = {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
            'language_info': {'name': 'python'}}
    return {**nb, 'metadata': meta, 'nbformat': 4, 'nbformat_minor': 5,
            'cells': [{**c, 'id': f'cell-{i}'} for i, c in enumerate(cells)]}

def notebook_order(proc: Path):
    "Processed notebooks in nbs/ order, index first; `_`/`.` names and notebooks since removed from nbs/ left out."
    nbs = [p for p in proc.rglob('*.ipynb') if not any(s.startswith(('_', '.')) for s in p.relative_to(proc).parts)
           and (ROOT/settings()['nbs_path']/p.relative_to(proc)).exists()]
    return sorted(nbs, key=lambda p: (p.relative_to(proc) != Path('index.ipynb'), str(p.relative_to(proc))))

def write_if_changed(path: Path, text: str):
    "Write only new content, so Sphinx rebuilds only the pages that changed."
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

def stage(proc: Path, dest: Path):
    "Write the Sphinx source tree `dest` from the processed notebooks in `proc`; returns the page names in order."
    cfg = settings()
    site_url = f"{cfg['doc_host'].rstrip('/')}{cfg['doc_baseurl'].rstrip('/')}"
    nbs = {p: json.loads(p.read_text()) for p in notebook_order(proc)}
    pages = {p: str(p.relative_to(proc).with_name(page_name(nb) or p.stem)) for p, nb in nbs.items()}
    names = {p.stem: Path(page).name for p, page in pages.items()}   # notebook file name → page name, for links
    for p, nb in nbs.items():
        staged = stage_notebook(nb, names, site_url)
        if pages[p] == 'index':   # the home page carries the sidebar: every other page, in order
            toc = '\n'.join(page for page in pages.values() if page != 'index')
            staged['cells'].append({**md_cell(f'```{{toctree}}\n:hidden:\n:maxdepth: 2\n\n{toc}\n```'), 'id': 'toctree'})
        write_if_changed(dest/f'{pages[p]}.ipynb', json.dumps(staged, indent=1, ensure_ascii=False))
    for old in dest.rglob('*.ipynb'):   # pages of notebooks that were removed or renamed
        if str(old.relative_to(dest).with_suffix('')) not in pages.values(): old.unlink()
    return list(pages.values())

def build_site(out: Path):
    "Process, stage and render the notebooks into `out`; returns the page names."
    from nbdev.serve import proc_nbs
    from sphinx.cmd.build import build_main
    os.chdir(ROOT)   # nbdev finds settings.ini from the working directory
    t0 = time.time()
    try: proc = Path(proc_nbs())
    except Exception as e:   # nbdev runs every cell that contains an import (and show_doc cells) to render the docs
        sys.exit(f'nbdev could not process the notebooks: {e}\nKeep imports in cells of their own: documentation '
                 'builds run every cell that contains an import.')
    print(f'processed the notebooks in {time.time() - t0:.1f}s')
    pages = stage(proc, proc/'_sphinx')
    html = proc/'_build'/'html'   # myst-nb writes next to Sphinx's output folder: keep that inside _proc/
    rc = build_main(['-b', 'html', '-q', '-c', str(HERE), '-d', str(proc/'_build'/'doctrees'), str(proc/'_sphinx'), str(html)])
    if rc: sys.exit(f'sphinx failed (exit {rc})')
    if out.exists() and any(out.iterdir()) and not (out/'.buildinfo').exists():
        sys.exit(f'{out} is not empty and holds no site built before: not replacing it')
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(html, out)
    print(f'built {len(pages)} pages into {out} in {time.time() - t0:.1f}s: open {out/"index.html"}')
    return pages

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, help='only build the site, into OUT (default: README.md, then _site/)')
    parser.add_argument('--readme', action='store_true', help='only write README.md from index.ipynb')
    args = parser.parse_args()
    if not args.out: write_readme()
    if not args.readme: build_site(args.out.resolve() if args.out else ROOT/'_site')
