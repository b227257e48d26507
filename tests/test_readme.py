"README.md is generated from index.ipynb (`make readme`) and must say what index.ipynb says."
from conftest import ROOT, load_site_script

def load_build():
    "nbs/_site/build.py, the script that writes README.md and the site, as a module."
    return load_site_script('build')

def test_readme_matches_index():
    expected = load_build().readme_text(ROOT/'index.ipynb')
    actual = (ROOT/'README.md').read_text() if (ROOT/'README.md').exists() else ''
    assert actual == expected, 'README.md and index.ipynb disagree. Fix: run `make readme` (and commit README.md)'

def test_readme_drops_hidden_cells_and_directives(tmp_path):
    import json
    md = '# t\n\n> d\n\n> **Tip: Note**\n>\n> body\n\n> **Warning**\n> $$x$$'   # a subtitle, two callouts
    cells = [{'cell_type': 'markdown', 'metadata': {}, 'source': md},
             {'cell_type': 'code', 'metadata': {}, 'source': '#| hide\nsecret = 1', 'outputs': [], 'execution_count': None},
             {'cell_type': 'code', 'metadata': {}, 'source': '#| echo: false\nprint("shown")', 'execution_count': None,
              'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': 'shown\n'}]}]
    nb = tmp_path/'index.ipynb'
    nb.write_text(json.dumps({'cells': cells, 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    text = load_build().readme_text(nb)
    assert '# t\n\n> d\n\n> [!TIP]\n> **Note**\n>\n> body\n\n> [!WARNING]\n> $$x$$' in text, text   # GitHub alerts
    assert '```\nshown\n```' in text
    assert 'secret' not in text and '#|' not in text and 'print(' not in text

def test_readme_states_the_laboratory_as_its_csv_says():
    "The README's 'Does it work?' tables are the ones `lab_headline` computes from data/experiments/frozen.csv now."
    from cir_unc.experiments import lab_headline
    readme = (ROOT/'README.md').read_text()
    assert lab_headline(ROOT/'data'/'experiments'/'frozen.csv') in readme, \
        'README.md states other numbers than frozen.csv: re-run index.ipynb (`python nbs/_site/execute.py index.ipynb`), then `make readme`'
