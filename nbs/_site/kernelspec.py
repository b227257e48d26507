"""Give every notebook the Python 3 kernel, so JupyterLab opens it on that kernel without asking which one to use.

    python nbs/_site/kernelspec.py           # add the kernelspec to every notebook that lacks it (idempotent)
    python nbs/_site/kernelspec.py --check   # list the notebooks without it; exit 1 if there are any

The kernelspec is written in the form `nbdev_clean` leaves it: nbdev keeps `kernelspec` in a notebook's metadata but
sets its `display_name` to its `name` (`python3`), so that is what is written here; JupyterLab picks the kernel by
`name` and shows the display name of the installed kernel ("Python 3 (ipykernel)"). Notebooks are written as nbdev
writes them (sorted keys, indent 1), so a clean notebook stays clean.
"""
import argparse, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNELSPEC = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}

def notebooks(nbs=ROOT/'nbs'):
    "Every notebook under `nbs` (as nbdev sees them: no `_`/`.` folders or files), links resolved, each once."
    found = [p.resolve() for p in sorted(Path(nbs).rglob('*.ipynb'))
             if not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts)]
    return list(dict.fromkeys(found))

def stamp(path) -> bool:
    "Set the kernelspec of the notebook at `path`; True if the file changed."
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    if nb.get('metadata', {}).get('kernelspec') == KERNELSPEC: return False
    nb.setdefault('metadata', {})['kernelspec'] = dict(KERNELSPEC)
    Path(path).write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    return True

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only list the notebooks without the kernelspec')
    parser.add_argument('--nbs', type=Path, default=ROOT/'nbs', help='the notebooks folder (default: nbs/)')
    args = parser.parse_args()
    if args.check:
        has = lambda p: json.loads(p.read_text()).get('metadata', {}).get('kernelspec') == KERNELSPEC
        missing = [p for p in notebooks(args.nbs) if not has(p)]
        for p in missing: print(f'no kernelspec: {p}')
        raise SystemExit(1 if missing else 0)
    changed = [p for p in notebooks(args.nbs) if stamp(p)]
    print(f'kernelspec added to {len(changed)} notebook(s)' + ''.join(f'\n  {p}' for p in changed))
