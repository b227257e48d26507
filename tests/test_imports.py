"""The house drawn from its imports: every module of cir_unc imports only modules below it (no circle, also through
imports inside functions), no `_private` name crosses a module, no library module imports the command line, and no
module or function grows past what a reader takes in at once."""
import ast
from pathlib import Path
import pytest
from conftest import ROOT

PACKAGE = ROOT/'cir_unc'
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 60
GENERATED = {'_modidx'}                       # nbdev's index of symbols, not code

def modules() -> dict:
    "Module name → parsed tree, for every cir_unc/*.py but nbdev's index."
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob('*.py')) if p.stem not in GENERATED}

def imports(tree: ast.Module, name: str) -> list[tuple[str, str, int]]:
    "(module imported, name imported or '', line) for every import of a cir_unc module anywhere in `tree`."
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: target = node.module or ''
            elif (node.module or '').startswith('cir_unc'): target = node.module.removeprefix('cir_unc').lstrip('.')
            else: continue
            for alias in node.names:
                if target: found.append((target.split('.')[0], alias.name, node.lineno))
                else: found.append((alias.name, '', node.lineno))          # from cir_unc import cli
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('cir_unc.'): found.append((alias.name.split('.')[1], '', node.lineno))
    return [f for f in found if f[0] != name]

def graph() -> dict:
    return {name: {m for m, _, _ in imports(tree, name)} for name, tree in modules().items()}

def find_circle(edges: dict) -> list | None:
    "One circle of `edges` (module → modules it imports) as a list of modules, or None."
    state, stack = {}, []
    def visit(node):
        state[node] = 'open'; stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 'open': return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)): return circle
        state[node] = 'done'; stack.pop()
    for node in sorted(edges):
        if node not in state and (circle := visit(node)): return circle
    return None

def test_find_circle_finds_one():
    "The check itself can fail: a made-up circle, also a long one, is found; a line of imports is not a circle."
    assert find_circle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_circle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None

def test_imports_are_seen_inside_functions():
    tree = ast.parse('def f():\n    from cir_unc.cli import load_trained\nimport cir_unc.data\nfrom . import runs\n')
    assert sorted((m, n) for m, n, _ in imports(tree, 'x')) == [('cli', 'load_trained'), ('data', ''), ('runs', '')]

def test_no_import_circle():
    assert find_circle(graph()) is None, f'import circle: {" → ".join(find_circle(graph()))}'

def test_no_private_name_across_modules():
    crossing = [f'{name}.py:{line} imports {module}.{what}' for name, tree in modules().items()
                for module, what, line in imports(tree, name) if what.startswith('_')]
    assert not crossing, crossing

def test_library_does_not_import_the_command_line():
    users = sorted(name for name, imported in graph().items() if 'cli' in imported)
    assert not users, f'these modules import cir_unc.cli (the commands only parse arguments and call the library): {users}'

def test_module_and_function_sizes():
    too_long = [f'{p.name}: {n} lines' for p in sorted(PACKAGE.glob('*.py'))
                if p.stem not in GENERATED and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    for name, tree in modules().items():
        too_long += [f'{name}.{f.name}: {f.end_lineno - f.lineno + 1} lines' for f in ast.walk(tree)
                     if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not too_long, too_long
