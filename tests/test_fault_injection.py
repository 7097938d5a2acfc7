"""Faults injected into the running demo graph (loopback only, bounded, self-stopping): each node
the orchestrator depends on is SIGKILLed in the middle of a goal, and the cameras stop. Every goal
must end within 30 s with OUTCOME_ERROR and a reason naming the component, no other node may die,
and the arm must come to rest; the killed node is then started again for the next case."""

import os
import signal
import time

import numpy as np
import pytest
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from twinloop_interfaces.action import ExecuteInstruction

from twinloop_bringup import graphs, processes
from twinloop_bringup.client import InstructionClient, call_service
from twinloop_ros import topics

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
Result = ExecuteInstruction.Result
# victim -> (the feedback stage to kill it in, words the goal's reason must contain); world_sim last
CASES = {
    'trajectory_scoring': ('score', 'trajectory_scoring'),
    'sim_twin': ('rollout', 'sim_twin'),
    'execution': ('execute', 'execution node'),
    'pose_estimation': ('execute', 'pose_estimation'),
    'cameras': ('execute', 'cameras'),  # world_sim's cameras stop (cameras_on false), nothing is killed
    'world_sim': ('execute', 'world_sim'),
}


@pytest.fixture  # per test, so a rerun starts from a whole graph again
def demo(tmp_path_factory):
    specs = {spec.name: spec for spec in graphs.load('sim_demo', {'scene': SCENE})}
    runs = tmp_path_factory.mktemp('runs')
    started = {}

    def start(name):
        args = specs[name].arguments()
        if name == 'task_orchestrator':
            args += ['-p', f'runs_dir:={runs}']
        started[name] = processes.start_python(args)

    for name in specs:
        start(name)
    yield started, start
    for process in started.values():
        processes.stop(process)


def _ready(client, node, name):
    """Wait until a restarted node serves again: its services are seen and it answers a call (its
    parameter service) - a node seen while still starting up loses the first goals sent to it."""
    names = {
        'trajectory_scoring': lambda: topics.SCORE_TRAJECTORIES in dict(node.get_service_names_and_types()),
        'sim_twin': lambda: topics.twin_service('sim_twin', 'rollout') in dict(node.get_service_names_and_types()),
        'execution': lambda: '/execution/stream' in dict(node.get_service_names_and_types()),
        'pose_estimation': lambda: bool(node.count_publishers(topics.OBJECTS)),
    }
    client.spin_until(names[name], 90, f'{name} to come back')
    parameters = node.create_client(GetParameters, f'/{name}/get_parameters')
    call_service(client.executor, parameters, GetParameters.Request(names=['use_sim_time']), 60, f'{name}')
    node.destroy_client(parameters)
    time.sleep(3.0)  # its first messages (objects, state) arrive and the orchestrator's clients match it


def _cameras(client, service, on):
    """Switch world_sim's cameras on or off (its cameras_on parameter)."""
    request = SetParameters.Request(parameters=[Parameter('cameras_on', Parameter.Type.BOOL, on).to_parameter_msg()])
    future = service.call_async(request)
    client.spin_until(future.done, 10, 'world_sim to set cameras_on')
    assert future.result().results[0].successful


# One rerun: a fresh-clone CI (2026-12-03, 1b0f99a) once saw the world_sim case end with 'the execution node (motion
# "c00 segment 1") did not answer within 10 s': the node had accepted and run the goal (its watchdog aborted it),
# the acceptance never reached the orchestrator. RosPorts now asks for a goal's result by its id when the
# acceptance is late (tests/test_motion_acceptance.py); drop this rerun once fresh-clone CIs stay green without it.
@pytest.mark.flaky(reruns=1)
@pytest.mark.timeout(900)
def test_killing_a_node_mid_goal_ends_the_goal_naming_it(demo, ros_node):
    started, start = demo
    node, executor = ros_node
    states = []
    node.create_subscription(JointState, topics.JOINT_STATES, states.append, 50)
    client = InstructionClient(node, executor=executor)
    client.wait_for_server(180)
    cameras = node.create_client(SetParameters, '/world_sim/set_parameters')
    report = {}
    for victim, (stage, named) in CASES.items():
        stages = []
        client.send('put the red cube in the bowl', num_candidates=4, on_feedback=lambda f: stages.append(f.stage))
        client.spin_until(lambda: stage in stages or client.is_done(0.0), 240, f'stage {stage} before killing {victim}')
        assert not client.is_done(0.0), f'the goal ended before {victim} could be killed: {client.result().reason}'
        if victim == 'cameras':
            _cameras(client, cameras, False)
        else:
            started[victim].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        result = client.wait(60)
        took = time.monotonic() - killed
        report[victim] = (round(took, 1), result.reason)
        assert result.outcome == Result.OUTCOME_ERROR and named in result.reason, (victim, result.reason)
        assert took < 30, (victim, took, result.reason)
        dead = [name for name, process in started.items() if name != victim and process.poll() is not None]
        assert not dead, f'killing {victim} also killed {dead}'
        if victim == 'world_sim':
            break
        client.spin_until(lambda: len(states) > 20, 10, 'joint states')
        end = time.monotonic() + 15
        while time.monotonic() < end and np.abs(states[-1].velocity[:7]).max() > 0.01:
            executor.spin_once(timeout_sec=0.05)
        assert np.abs(states[-1].velocity[:7]).max() <= 0.01, f'the arm still moves after the {victim} fault'
        if victim == 'cameras':
            _cameras(client, cameras, True)
            time.sleep(3.0)  # pose estimation sees frames again
        else:
            started[victim].wait(10)
            start(victim)
            _ready(client, node, victim)
    print('faults:', report)
