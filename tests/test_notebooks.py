"""Every notebook is a test: one pytest case per notebook, run in a fresh Jupyter kernel (nbclient), started in the
notebook's folder, as a reader's "Run All" in JupyterLab runs it (`nbs/_site/execute.py`; nothing is written back).

Cells flagged with one of `tst_flags` in settings.ini (`gpu data slow`) are skipped unless asked for:
`CIR_UNC_TEST_FLAGS="slow data" make test`. `gpu` is added automatically when CUDA is available. Cells that call
`nbdev_export()` are not run (the package is checked against the notebooks by tests/test_repo.py).
"""
import os
import pytest
from conftest import ROOT, load_site_script

NBS = ROOT/'nbs'

def load_execute():
    "nbs/_site/execute.py, the script that runs notebooks in a kernel, as a module."
    return load_site_script('execute')

def notebooks():
    "The notebooks nbdev tests: every `*.ipynb` under nbs/ not starting with `_` or `.`."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def force_flags():
    "Flags to run anyway: from CIR_UNC_TEST_FLAGS, plus `gpu` when CUDA is available."
    flags = os.environ.get('CIR_UNC_TEST_FLAGS', '').replace(',', ' ').split()
    try:
        import torch
        if torch.cuda.is_available(): flags.append('gpu')
    except ImportError: pass
    return flags

def test_notebooks_found():
    names = {p.name for p in notebooks()}
    assert 'index.ipynb' in names and len(names) >= 3, names

def test_skipped_cells():
    "What the kernel runs: flagged cells (unless asked for), `eval: false` and `nbdev_export()` cells are left out."
    skip_reason, skip = load_execute().skip_reason, {'slow', 'data', 'gpu'}
    assert skip_reason('#| slow\n#| gpu\ntrain()', skip) == 'flagged gpu slow'
    assert skip_reason('#| slow\ntrain()', skip - {'slow'}) is None
    assert skip_reason('#| hide\nimport nbdev; nbdev.nbdev_export()', skip) and skip_reason('#| eval: false\nx', skip)
    assert skip_reason('#| export\ndef f(): pass', skip) is None and skip_reason('x = 1  # slow', skip) is None

@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: str(p.relative_to(NBS)))
def test_notebook(nb):
    load_execute().execute(nb, force_flags(), write=False)   # raises CellExecutionError: the cell and its traceback
