"The repository keeps itself in step: the package is what nbdev_export writes, the notebooks are clean."
import filecmp, subprocess, sys
from pathlib import Path
from conftest import ROOT

def tree(path: Path):
    "Relative paths of the files under `path`, caches left out."
    return sorted(str(p.relative_to(path)) for p in path.rglob('*')
                  if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts)

def run(cmd, cwd):
    bindir = Path(sys.executable).parent
    res = subprocess.run([str(bindir/cmd)], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f'{cmd} failed:\n{res.stdout}\n{res.stderr}'

def assert_same_tree(a: Path, b: Path, fix: str):
    assert tree(a) == tree(b), f'files differ: {set(tree(a)) ^ set(tree(b))}. Fix: {fix}'
    changed = [f for f in tree(a) if not filecmp.cmp(a/f, b/f, shallow=False)]
    assert not changed, f'changed: {changed}. Fix: {fix}'

def test_index_symlink():
    link = ROOT/'nbs'/'index.ipynb'
    assert link.is_symlink() and link.resolve() == (ROOT/'index.ipynb').resolve()

def test_export_leaves_package_unchanged(repo_copy):
    run('nbdev_export', repo_copy)
    assert_same_tree(ROOT/'cir_unc', repo_copy/'cir_unc', 'run `nbdev_export` and commit cir_unc/ (never edit it by hand)')

def test_notebooks_are_clean(repo_copy):
    run('nbdev_clean', repo_copy)
    assert_same_tree(ROOT/'nbs', repo_copy/'nbs', 'run `nbdev_clean` and commit the notebooks')
    assert filecmp.cmp(ROOT/'index.ipynb', repo_copy/'index.ipynb', shallow=False), 'run `nbdev_clean` (index.ipynb)'
