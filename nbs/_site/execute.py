"""Run notebooks in a real Jupyter kernel (nbclient), the way a reader's "Run All" runs them, and keep their outputs.

    python nbs/_site/execute.py nbs/02_losses.ipynb [more.ipynb …]            # run, write the outputs back (then `nbdev_clean`)
    python nbs/_site/execute.py --check nbs/02_losses.ipynb                   # run only: fail on the first error, write nothing
    python nbs/_site/execute.py --flags "slow" nbs/05_train.ipynb             # also run cells flagged `#| slow`

Cells flagged with one of settings.ini's `tst_flags` (`gpu data slow`) are skipped unless named in --flags, exactly as
`make test` skips them; a skipped cell keeps the outputs it has (a GPU table stays as it was saved). As nbdev's own
test runner does, cells marked `#| eval: false` and cells that call `nbdev_export()` are skipped too: running a notebook
never rewrites cir_unc/. The kernel starts in the notebook's folder, as JupyterLab starts it. `make test` runs every
notebook this way (tests/test_notebooks.py).
"""
import argparse, configparser, copy, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]

def tst_flags() -> set:
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    return set(cfg['DEFAULT'].get('tst_flags', '').split())

def cell_flags(source: str) -> set:
    "The bare `#| flag` directives at the top of a code cell."
    found = set()
    for line in source.splitlines():
        m = re.match(r'\s*#\|\s*([\w-]+)\s*$', line)
        if not m: break
        found.add(m[1])
    return found

def skip_reason(source: str, skip: set):
    "Why a code cell is not run (a text), or None: flagged with one of `skip`, `#| eval: false`, or calls nbdev_export."
    if flags := cell_flags(source) & skip: return 'flagged ' + ' '.join(sorted(flags))
    if re.search(r'^\s*#\|\s*eval\s*:\s*false\s*$', source, re.M | re.I): return 'eval: false'
    if 'nbdev_export(' in source: return 'nbdev_export() is not run here'

def execute(path, run_flags=(), write: bool = True, timeout: int = 600, kernel: str = 'python3') -> float:
    "Run `path` in a fresh kernel; skipped cells keep their outputs. Returns the seconds taken; raises on a cell error."
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    skip = tst_flags() - set(run_flags)
    run = copy.deepcopy(nb)
    skipped = []
    for i, cell in enumerate(run.cells):
        if cell.cell_type == 'code' and (why := skip_reason(cell.source, skip)):
            cell.source = f'pass  # skipped: {why}'; skipped.append(i)
    start = time.perf_counter()
    NotebookClient(run, timeout=timeout, kernel_name=kernel, resources={'metadata': {'path': str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    if write:
        for i, (cell, done) in enumerate(zip(nb.cells, run.cells)):
            if cell.cell_type == 'code' and i not in skipped:
                cell.outputs, cell.execution_count = done.outputs, done.execution_count
        nbformat.write(nb, path)
    return seconds

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+'); p.add_argument('--check', action='store_true', help='run only, write nothing')
    p.add_argument('--flags', default='', help='flagged cells to run too, e.g. "slow data"')
    p.add_argument('--timeout', type=int, default=600, help='seconds per cell')
    a = p.parse_args()
    for nb in a.notebooks:
        print(f'{nb}: {execute(nb, a.flags.split(), write=not a.check, timeout=a.timeout):.1f}s', flush=True)
