# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Code style (flake8, ROS 2's 99 columns, single quotes), copyright headers, import cycles."""

import ast
from pathlib import Path
import re
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ['tesg_ros', 'test', 'bench', 'launch', 'setup.py']
HEADER = '# Copyright 2026 The tesg_ros authors'


def python_files():
    for entry in SOURCE_DIRS:
        path = ROOT / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(path.rglob('*.py'))


def test_flake8():
    pytest.importorskip('flake8')
    result = subprocess.run(
        [sys.executable, '-m', 'flake8', '--inline-quotes', 'single',
         *[str(p) for p in python_files()]],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_file_has_the_copyright_header():
    missing = [str(p.relative_to(ROOT)) for p in python_files()
               if not p.read_text(encoding='utf-8').startswith(HEADER)]
    assert not missing, f'missing "{HEADER}": {missing}'


def test_rclpy_appears_only_in_the_ros_shell():
    """rclpy only in tesg_ros/ros/; the core never imports the shell (only the console
    scripts in tesg_ros/cli/ do). Message classes may be imported lazily by the core's
    converters (they build a message only when asked to)."""
    ros_import = re.compile(r'^\s*(import|from) rclpy\b', re.MULTILINE)
    shell_import = re.compile(r'^\s*(import|from) tesg_ros\.ros\b', re.MULTILINE)
    offenders, core_to_shell = [], []
    for path in sorted((ROOT / 'tesg_ros').rglob('*.py')):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding='utf-8')
        if rel.startswith('tesg_ros/ros/'):
            continue
        if ros_import.search(text):
            offenders.append(rel)
        if not rel.startswith('tesg_ros/cli/') and shell_import.search(text):
            core_to_shell.append(rel)
    assert not offenders, f'ROS imported outside the ROS shell: {offenders}'
    assert not core_to_shell, f'the core imports the ROS shell: {core_to_shell}'
    assert any(ros_import.search(p.read_text(encoding='utf-8'))
               for p in (ROOT / 'tesg_ros' / 'ros').glob('*.py')), 'the checker finds rclpy'


# ---------------------------------------------------------------- import cycles
def _module_names():
    names = {}
    for path in (ROOT / 'tesg_ros').rglob('*.py'):
        parts = list(path.relative_to(ROOT).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        names['.'.join(parts)] = path
    return names


def _imports(tree, deferred):
    """Import statements of a module: those run at import time (the module body, class bodies,
    if/try blocks) and, with ``deferred``, also those inside functions."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if not deferred and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            stack.extend(ast.iter_child_nodes(node))


def _import_targets(name, path, node, modules):
    """tesg_ros modules an import statement loads (the deepest existing module per name)."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ''
        if node.level:
            package = name if path.name == '__init__.py' else name.rpartition('.')[0]
            for _ in range(node.level - 1):
                package = package.rpartition('.')[0]
            base = f'{package}.{base}' if base else package
        candidates = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base
                      for alias in node.names]
    for target in candidates:
        while target and target not in modules:
            target = target.rpartition('.')[0]
        # A module's own parent packages are imported before it anyway: not an edge.
        if target and target != name and not name.startswith(target + '.'):
            yield target


def import_cycles(deferred=False):
    """Strongly connected components (> 1 module) of the tesg_ros import graph."""
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding='utf-8'))
        graph[name] = sorted({target for node in _imports(tree, deferred)
                              for target in _import_targets(name, path, node, modules)})
    order, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(module):  # Tarjan
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(frozenset(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return cycles


def test_import_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / 'tesg_ros'
    (package / 'sub').mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'sub' / '__init__.py').write_text('from tesg_ros.sub import a\n')
    (package / 'sub' / 'a.py').write_text('from tesg_ros.sub.b import f\n')
    (package / 'sub' / 'b.py').write_text('def f():\n    from . import a\n')
    (package / 'c.py').write_text('import tesg_ros.sub.a\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    assert import_cycles() == []
    assert import_cycles(deferred=True) == [frozenset({'tesg_ros.sub.a', 'tesg_ros.sub.b'})]


def test_no_import_cycles_at_import_time():
    assert import_cycles() == []


def test_no_import_cycles_through_deferred_imports():
    assert import_cycles(deferred=True) == []
