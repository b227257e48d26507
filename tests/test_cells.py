"""Every code cell of every notebook compiles, flagged ones (`gpu`, `data`, `slow`) included: the tests skip those cells,
so a syntax error in one would otherwise wait for the first reader who runs it.

A cell is first transformed the way IPython transforms it before running it (`!cmd` and `%magic` lines become Python),
then compiled — not run.
"""
import json
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from conftest import ROOT

def notebook_paths():
    "nbs/*.ipynb (not `_…` scratch notebooks) and index.ipynb, each once (nbs/index.ipynb is a link to it)."
    paths = {p.resolve() for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.'))}
    return sorted(paths | {(ROOT/'index.ipynb').resolve()})

def code_cells(path):
    "`(index, source)` of each code cell, the index counting every cell as JupyterLab numbers them from 0."
    cells = json.loads(path.read_text())['cells']
    return [(i, ''.join(c['source'])) for i, c in enumerate(cells) if c['cell_type'] == 'code']

def compile_error(source: str, name: str) -> str | None:
    "None if `source` compiles after IPython's transformation, else the error as one line."
    try: compile(TransformerManager().transform_cell(source), name, 'exec')
    except SyntaxError as e: return f'{type(e).__name__}: {e.msg} (line {e.lineno}: {(e.text or "").strip()!r})'
    return None

def test_notebooks_found():
    names = {p.name for p in notebook_paths()}
    assert 'index.ipynb' in names and len(names) >= 3, names

@pytest.mark.parametrize('path', notebook_paths(), ids=lambda p: p.name)
def test_every_code_cell_compiles(path):
    errors = [f'{path.name} cell {i}: {error}' for i, source in code_cells(path)
              if (error := compile_error(source, f'{path.name}[{i}]'))]
    assert not errors, '\n'.join(errors)

def test_a_broken_cell_is_caught():
    "The check itself: a loop whose body is only a comment fails, while shell and magic lines pass."
    assert compile_error('for x in y:\n    # !echo {x}\n', 'cell') is not None
    assert compile_error('for x in y:\n    !echo {x}\n%time f()\n%%capture\n', 'cell') is None
