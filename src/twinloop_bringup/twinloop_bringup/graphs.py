"""Graph definitions (config/graphs.yaml), shared by `twinloop run` and the launch files, and a
supervisor that runs a graph as processes: a node that dies is reported by name and the whole
graph is stopped, leaving no orphans."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from twinloop_bringup import processes, ros_env


@dataclass
class NodeSpec:
    """One node of a graph: what to run, its params file and parameter overrides, its remappings."""

    name: str
    package: str
    executable: str
    module: str
    params_file: str  # absolute path
    parameters: dict = field(default_factory=dict)  # overrides on top of params_file
    remappings: list = field(default_factory=list)  # [(from, to)]

    def arguments(self):
        """`python` arguments that start this node exactly as the launch file declares it."""
        args = ['-m', self.module, '--ros-args', '-r', f'__node:={self.name}', '--params-file', self.params_file]
        for key, value in self.parameters.items():
            args += ['-p', f'{key}:={value}']
        for source, target in self.remappings:
            args += ['-r', f'{source}:={target}']
        return args


def _substitute(value, values):
    if isinstance(value, str):
        for key, replacement in values.items():
            if value == f'${key}':
                return replacement  # whole-value substitution keeps non-string objects (launch substitutions)
            value = value.replace(f'${key}', str(replacement))
    return value


def load(graph, values, graphs_file=None):
    """NodeSpecs of a graph (includes first, then the graph's `override` of their parameters, then
    its own nodes), with $scene/$config/$urdf substituted from values."""
    config = ros_env.config_dir()
    path = Path(graphs_file) if graphs_file else config / 'graphs.yaml'
    with open(path) as f:
        graphs = yaml.safe_load(f)['graphs']
    if graph not in graphs:
        raise ValueError(f'unknown graph {graph!r}; {path} defines {sorted(graphs)}')
    values = {'config': str(config), 'urdf': str(config.parent / 'urdf'), **values}
    specs = []
    for included in graphs[graph].get('include', []):
        specs += load(included, values, graphs_file)
    for name, overrides in graphs[graph].get('override', {}).items():  # parameters of included nodes
        matches = [spec for spec in specs if spec.name == name]
        if not matches:
            raise ValueError(f'graph {graph!r} overrides {name!r}, which its includes do not start')
        for spec in matches:
            spec.parameters.update({k: _substitute(v, values) for k, v in overrides.items()})
    for node in graphs[graph].get('nodes', []):
        specs.append(
            NodeSpec(
                node['name'],
                node['package'],
                node['executable'],
                node['module'],
                str(config / node['params_file']),
                {k: _substitute(v, values) for k, v in node.get('parameters', {}).items()},
                [tuple(r) for r in node.get('remappings', [])],
            )
        )
    return specs


class GraphFailure(RuntimeError):
    """A node of a running graph died; the message names it and its exit code."""


class Supervisor:
    """Starts a graph's nodes as child processes and notices when one dies."""

    def __init__(self, specs, env):
        self.specs, self.env = specs, env
        self.processes = {}

    def __enter__(self):
        for spec in self.specs:
            self.processes[spec.name] = processes.start_python(spec.arguments(), self.env)
        return self

    def check(self):
        """Raise GraphFailure naming every node that exited."""
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise GraphFailure('node(s) died: ' + ', '.join(f'{n} (exit code {c})' for n, c in dead.items()))

    def stop(self):
        """Stop every node (SIGINT, then SIGKILL); {name: exit code or None if killed}."""
        return dict(zip(self.processes, processes.stop_all(list(self.processes.values()))))

    def __exit__(self, *exc):
        self.stop()

    def wait(self, poll=0.2):
        """Block until a node dies (GraphFailure) or SIGINT (KeyboardInterrupt propagates)."""
        while True:
            self.check()
            time.sleep(poll)
