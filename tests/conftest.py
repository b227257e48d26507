"Shared helpers for the tests: the repository root and a copy of it to run nbdev commands in."
import importlib.util, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def load_site_script(name: str):
    "A script of nbs/_site/ (`build`, `execute`, `kernelspec`) as a module."
    spec = importlib.util.spec_from_file_location(f'site_{name}', ROOT/'nbs'/'_site'/f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

@pytest.fixture
def repo_copy(tmp_path):
    "A copy of the files nbdev reads and writes (settings.ini, index.ipynb, nbs/, cir_unc/), symlinks kept."
    dest = tmp_path/'repo'
    dest.mkdir()
    for name in ['settings.ini', 'index.ipynb', 'setup.py']:
        shutil.copy2(ROOT/name, dest/name)
    ignore = shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', '_proc', '_docs')   # not _site: nbs/_site/ holds scripts
    shutil.copytree(ROOT/'nbs', dest/'nbs', symlinks=True, ignore=ignore)
    shutil.copytree(ROOT/'cir_unc', dest/'cir_unc', ignore=ignore)
    return dest
