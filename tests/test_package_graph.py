"""The package graph, read from the sources with ast (no ROS started, nothing imported):

(a) no engine package imports another engine package (engine packages: those with a module that
    registers an engine, `@register_engine(...)`);
(b) no node module (*_node.py) imports another node module;
(c) twinloop_core imports nothing of ROS and no other twinloop package;
(d) every package's package.xml declares, as exec_depend, the twinloop packages, rclpy and the
    message packages its modules import, and every twinloop exec_depend is imported (twinloop_bringup
    also runs the nodes of config/graphs.yaml and the engines task_orchestrator.yaml names, so
    their packages count as used there).

Every import counts, wherever it is (module level or inside a function); imports by name at run
time (importlib.import_module, the orchestrator's `engines` parameter) are not seen.
"""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / 'src'
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / 'package.xml').is_file())
PYTHON_PACKAGES = [p for p in PACKAGES if (SRC / p / p / '__init__.py').is_file()]
GRAPH_RUNNER = 'twinloop_bringup'  # installs config/ and starts the nodes of config/graphs.yaml
ENGINE_DECORATOR = re.compile(r'^\s*@(?:[\w.]+\.)?register_engine\(', re.M)


def modules(package):
    """(path, dotted module name) of every module of a package, test folders left out."""
    base = SRC / package
    found = []
    for path in sorted((base / package).rglob('*.py')):
        parts = path.relative_to(base).with_suffix('').parts
        if 'test' in parts or 'tests' in parts:
            continue
        found.append((path, '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)))
    return found


def imports(path, module):
    """(line, dotted name) of everything a module imports; `from a import b` gives a and a.b
    (b may be a submodule); relative imports are resolved."""
    is_package = path.name == '__init__.py'
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split('.')
                parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                source = '.'.join(parts + ([node.module] if node.module else []))
            else:
                source = node.module
            found.append((node.lineno, source))
            found += [(node.lineno, f'{source}.{alias.name}') for alias in node.names if alias.name != '*']
    return found


def rel(path):
    return path.relative_to(ROOT)


def top(name):
    return name.split('.')[0]


def is_ros(name):
    t = top(name)
    return (
        t in ('rclpy', 'builtin_interfaces', 'tf2_ros', 'ament_index_python', 'launch', 'launch_ros')
        or t.startswith(('rcl', 'rosidl'))
        or t.endswith(('_msgs', '_srvs', '_interfaces'))
        or t in ('twinloop_interfaces', 'twinloop_ros')
    )


def declared(package):
    """exec_depend (and depend) entries of a package.xml."""
    tree = ET.parse(SRC / package / 'package.xml')
    return {e.text.strip() for tag in ('exec_depend', 'depend') for e in tree.getroot().iter(tag)}


def graph_packages():
    """Packages the graphs run: their nodes' packages and the engines task_orchestrator loads by name."""
    with open(ROOT / 'config' / 'graphs.yaml') as f:
        graphs = yaml.safe_load(f)['graphs']
    with open(ROOT / 'config' / 'task_orchestrator.yaml') as f:
        engines = yaml.safe_load(f)['task_orchestrator']['ros__parameters']['engines']
    return {node['package'] for graph in graphs.values() for node in graph.get('nodes', [])} | {
        module.split('.')[0] for module in engines
    }


def engine_packages():
    return sorted(
        p for p in PYTHON_PACKAGES if any(ENGINE_DECORATOR.search(path.read_text()) for path, _ in modules(p))
    )


def test_packages_are_found():
    assert {'twinloop_core', 'twinloop_ros', 'twinloop_planning'} <= set(PYTHON_PACKAGES)
    assert 'twinloop_interfaces' in PACKAGES
    assert engine_packages(), 'no module registers an engine: the @register_engine( search is broken'


def test_no_engine_imports_another_engine():
    engines = engine_packages()
    violations = [
        f'{rel(path)}:{line} imports {name} (engine {package} must not use engine {top(name)})'
        for package in engines
        for path, module in modules(package)
        for line, name in imports(path, module)
        if top(name) in engines and top(name) != package
    ]
    assert not violations, '\n'.join(sorted(set(violations)))


def test_no_node_imports_another_node():
    node_modules = {module for p in PYTHON_PACKAGES for path, module in modules(p) if path.name.endswith('_node.py')}
    violations = [
        f'{rel(path)}:{line} imports node module {name}'
        for p in PYTHON_PACKAGES
        for path, module in modules(p)
        if path.name.endswith('_node.py')
        for line, name in imports(path, module)
        if name in node_modules and name != module
    ]
    assert not violations, '\n'.join(sorted(set(violations)))


def test_core_is_free_of_ros_and_other_packages():
    violations = [
        f'{rel(path)}:{line} imports {name}'
        + (' (ROS)' if is_ros(name) else ' (twinloop_core imports no other twinloop package)')
        for path, module in modules('twinloop_core')
        for line, name in imports(path, module)
        if is_ros(name) or (top(name).startswith('twinloop') and top(name) != 'twinloop_core')
    ]
    assert not violations, '\n'.join(sorted(set(violations)))


def _tracked(name):
    t = top(name)
    return t.startswith('twinloop') or t in ('rclpy', 'builtin_interfaces') or t.endswith(('_msgs', '_srvs'))


def test_package_xml_declares_what_is_imported():
    violations = []
    for package in PYTHON_PACKAGES:
        deps = declared(package)
        first = {}  # (file, imported package) -> (line, name) of its first import there
        for path, module in modules(package):
            for line, name in imports(path, module):
                if _tracked(name) and top(name) != package:
                    first.setdefault((path, top(name)), (line, name))
        used = {t for _, t in first}
        for (path, t), (line, name) in first.items():
            if t not in deps:
                violations.append(
                    f'{rel(path)}:{line} imports {name}, but src/{package}/package.xml '
                    f'has no <exec_depend>{t}</exec_depend>'
                )
        if package == GRAPH_RUNNER:
            for t in sorted(graph_packages() - deps):
                violations.append(
                    f'config/graphs.yaml (or the engines of task_orchestrator.yaml) runs {t}, '
                    f'but src/{package}/package.xml '
                    f'has no <exec_depend>{t}</exec_depend>'
                )
            used |= graph_packages()
        for t in sorted(d for d in deps if d.startswith('twinloop') and d not in used):
            violations.append(
                f'src/{package}/package.xml declares <exec_depend>{t}</exec_depend>, '
                f'but no module of {package} imports {t}'
            )
    assert not violations, '\n'.join(sorted(set(violations)))
