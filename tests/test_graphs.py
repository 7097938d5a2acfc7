"""One source of truth for graphs: the launch files declare exactly the nodes, parameters and
remappings `twinloop run` starts; a node that dies ends the run with its name, no orphans.

`launch`/`launch_ros` cannot be installed here, so the launch files run against recording
stand-ins of their few classes (DeclareLaunchArgument, LaunchConfiguration, Node, ...)."""

import os
import runpy
import signal
import subprocess
import sys
import time
import types

import psutil
import pytest

from twinloop_bringup import graphs

ROOT = os.environ['TWINLOOP_ROOT']
GRAPHS = ['sim_arm', 'sim_twin_scoring', 'cameras_only', 'perception', 'sim_perception', 'sim_demo', 'real_arm']
GRAPHS += ['sim_vla', 'sim_demo_vla']


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def launch_stand_ins(monkeypatch):
    nodes = []

    class Node(Recorded):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            nodes.append(kwargs)

    class LaunchConfiguration(Recorded):
        def __str__(self):
            return f'<LaunchConfiguration {self.args[0]}>'

    modules = {
        'launch': types.SimpleNamespace(LaunchDescription=Recorded),
        'launch.actions': types.SimpleNamespace(DeclareLaunchArgument=Recorded, Shutdown=Recorded),
        'launch.substitutions': types.SimpleNamespace(
            LaunchConfiguration=LaunchConfiguration, PathJoinSubstitution=Recorded
        ),
        'launch_ros.actions': types.SimpleNamespace(Node=Node),
        'launch_ros.substitutions': types.SimpleNamespace(FindPackageShare=Recorded),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, 'twinloop_graph', raising=False)
    return nodes


@pytest.mark.parametrize('graph', GRAPHS)
def test_launch_file_declares_what_twinloop_run_starts(launch_stand_ins, graph):
    description = runpy.run_path(os.path.join(ROOT, 'launch', f'{graph}.launch.py'))['generate_launch_description']()
    declared = launch_stand_ins
    assert description.args[0][0].args[0] == 'scene'
    started = graphs.load(graph, {'scene': '/scenes/x.yaml'})
    assert [n['name'] for n in declared] == [s.name for s in started]
    for node, spec in zip(declared, started):
        assert (node['package'], node['executable']) == (spec.package, spec.executable)
        params_file, overrides = node['parameters']
        assert params_file == spec.params_file and os.path.isfile(params_file)
        launch_values = {
            k: ('/scenes/x.yaml' if 'LaunchConfiguration scene' in str(v) else v) for k, v in overrides.items()
        }
        assert launch_values == spec.parameters
        assert list(node['remappings']) == spec.remappings
        assert spec.name in node['on_exit'].kwargs['reason']  # fail-stop, as the twinloop run supervisor
        args = spec.arguments()
        assert args[:2] == ['-m', spec.module] and f'__node:={spec.name}' in args
        for key, value in spec.parameters.items():
            assert f'{key}:={value}' in args


def test_every_graph_module_matches_its_executable():
    for graph in GRAPHS:
        for spec in graphs.load(graph, {'scene': 'x'}):
            with open(os.path.join(ROOT, 'src', spec.package, 'setup.py')) as f:
                assert f"'{spec.executable} = {spec.module}:main'" in f.read(), spec


def test_killed_node_ends_the_run_with_its_name_and_no_orphans():
    run = subprocess.Popen(
        [sys.executable, '-m', 'twinloop_bringup.cli', 'run', 'sim_arm'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        children = []
        while time.monotonic() < deadline and len(children) < 2:
            time.sleep(0.5)
            children = psutil.Process(run.pid).children()
        assert len(children) == 2, 'the graph should run world_sim and execution'
        time.sleep(3)
        victim = next(c for c in children if 'execution_node' in ' '.join(c.cmdline()))
        victim.send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1
    assert 'execution (exit code -9)' in output and 'stopping the graph' in output, output
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, f'orphan {child.pid}'
