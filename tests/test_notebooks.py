"""Every notebook is a test: one pytest case per notebook, run with nbdev's own machinery (`nbdev.test.test_nb`).

Cells flagged with one of `tst_flags` in settings.ini (`gpu data slow`) are skipped unless asked for:
`CIR_UNC_TEST_FLAGS="slow data" make test`. `gpu` is added automatically when CUDA is available.
"""
import os
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

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

@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: str(p.relative_to(NBS)))
def test_notebook(nb):
    skip = get_config(path=ROOT).tst_flags.split()
    ok, seconds = run_notebook(nb, skip_flags=skip, force_flags=force_flags(), showerr=True, basepath=ROOT)
    assert ok, f'{nb.name} failed (traceback above, in the captured stderr)'
