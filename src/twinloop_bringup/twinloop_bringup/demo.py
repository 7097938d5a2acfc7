"""`twinloop demo`: the simulated Real2Sim2Real loop end to end, every part a ROS 2 process.

The sim_demo graph (config/graphs.yaml) runs world_sim (the stand-in arm and cameras),
pose_estimation (objects from the camera topics), sim_twin (the MuJoCo twin), trajectory_scoring
(twin_critic by default: not a VLM, and it says so), execution (IK, ruckig, the safety gate) and
task_orchestrator (ExecuteInstruction: the instruction parsed by twinloop_language, then the
AntiGrounding MPC). This client sends the instruction as an action goal through InstructionClient,
prints the live feedback, records the run (rosbag2, MCAP) and judges the outcome again on the world's ground truth,
independently of the planner's belief.
"""

import json
import os
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory
from twinloop_interfaces.msg import DetectedObjectArray

from twinloop_bringup import graphs, recording, ros_env
from twinloop_bringup.client import InstructionClient, InstructionError
from twinloop_core.judging import judge
from twinloop_ros import topics
from twinloop_ros.conversions import image_array, object_states

PERCEPTION = 'pose_estimation node (open3d registration on the simulated RealSense topics)'
GRAPH = 'sim_demo'  # config/graphs.yaml
FRONT_COLOR = topics.camera_topic('front', 'color')
RECORDED = {
    topics.JOINT_STATES: JointState,
    topics.GROUND_TRUTH_OBJECTS: DetectedObjectArray,
    topics.OBJECTS: DetectedObjectArray,
    FRONT_COLOR: Image,
    topics.ARM_TRAJECTORY: JointTrajectory,
    topics.GRIPPER_COMMAND: Float64,
}


class DemoFailure(RuntimeError):
    """The demo cannot go on (a node died, a timeout, a rejected or failed goal); the message says why."""


class DemoClient:
    """The demo's own node (twinloop_demo): world ground truth, the front camera and the instruction client."""

    def __init__(self, context, supervisor):
        self.node = rclpy.create_node('twinloop_demo', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.supervisor = supervisor
        self.truth = self.image = None
        self.node.create_subscription(
            DetectedObjectArray, topics.GROUND_TRUTH_OBJECTS, lambda m: setattr(self, 'truth', m), topics.STATE_QOS
        )
        self.node.create_subscription(Image, FRONT_COLOR, lambda m: setattr(self, 'image', m), topics.SENSOR_QOS)
        self.instruction = InstructionClient(self.node, executor=self.executor, check=self.check)

    def check(self):
        """Raise DemoFailure if a process of the graph has died."""
        try:
            self.supervisor.check()
        except graphs.GraphFailure as exc:
            raise DemoFailure(str(exc)) from None

    def spin_until(self, condition, timeout, what):
        """Spin until condition() holds; DemoFailure naming `what` after timeout [s] or if a node dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.supervisor.check()
            except graphs.GraphFailure as exc:
                raise DemoFailure(f'{exc} while waiting for {what}') from None
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return
        raise DemoFailure(f'timed out after {timeout:.0f} s waiting for {what}')

    def objects(self):
        """Ground truth as {id: (position, quat wxyz, size)}."""
        return object_states(self.truth)


def run(instruction, scene_path, runs_dir, timeout=240.0, record=True):
    """Run the sim_demo graph on one instruction, judge it on ground truth; exit code 0 on success.

    timeout: wall-clock limit of the goal [s]. The report, images and bag go to runs_dir/<timestamp>/.
    """
    started = time.monotonic()
    run_dir = Path(runs_dir) / time.strftime('%Y%m%d-%H%M%S')
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = []

    def log(message):
        line = f'[{time.monotonic() - started:6.1f} s] {message}'
        print(line, flush=True)
        steps.append(line)

    domain = ros_env.allocate_domain_id()
    env = ros_env.dds_environment(domain)
    os.environ.update(env)
    specs = graphs.load(GRAPH, {'scene': scene_path})
    for spec in specs:
        if spec.name == 'task_orchestrator':
            spec.parameters['runs_dir'] = str(run_dir / 'planner')
    supervisor = graphs.Supervisor(specs, env).__enter__()
    log(
        f'started graph {GRAPH}: {", ".join(f"{n} (pid {p.pid})" for n, p in supervisor.processes.items())}; '
        f'ROS_DOMAIN_ID={domain}, DDS on loopback'
    )
    log(f'perception: {PERCEPTION}')
    context = rclpy.context.Context()
    rclpy.init(context=context)
    outcome = {'instruction': instruction, 'perception': PERCEPTION, 'success': False}
    recorder = None
    try:
        client = DemoClient(context, supervisor)
        if record:
            recorder = recording.BagRecorder(client.node, run_dir / 'bag', RECORDED, sensor_topics=[FRONT_COLOR])
            outcome['recording'] = str(run_dir / 'bag')
        client.spin_until(
            lambda: (
                client.truth is not None and client.image is not None and client.instruction.action.server_is_ready()
            ),
            120,
            'world_sim topics and the task orchestrator',
        )
        before = client.objects()
        log(
            'scene    '
            + ', '.join(
                f'{o.label} at ({o.pose.position.x:.2f}, {o.pose.position.y:.2f})' for o in client.truth.objects
            )
        )
        _save_png(client.image, run_dir / 'front_before.png')

        def on_feedback(f):
            outcome['planner'] = f.backend
            log(f'{f.stage:8s} sub-task {f.subtask} step {f.step}: {f.chosen_candidate}   [{f.backend}]')

        log(f'goal     "{instruction}" -> {topics.EXECUTE_INSTRUCTION}')
        try:
            client.instruction.send(instruction, timeout=timeout, on_feedback=on_feedback)
            result = client.instruction.wait(timeout)
        except InstructionError as exc:
            raise DemoFailure(str(exc)) from None
        log(f'result   {result.reason}')
        outcome['planner_report'] = result.report_path
        if not result.success:
            raise DemoFailure(f'the task orchestrator ended with: {result.reason}')
        report = json.loads(Path(result.report_path).with_name('report.json').read_text())
        time.sleep(1.0)
        client.truth = None
        client.spin_until(lambda: client.truth is not None, 10, 'ground truth after the motion')
        success, detail = judge(report['subtasks'], before, client.objects())
        _save_png(client.image, run_dir / 'front_after.png')
        outcome.update(success=success, reason=f'ground truth: {detail}')
    except DemoFailure as exc:
        outcome['reason'] = str(exc)
    finally:
        if recorder is not None:
            counts = recorder.close()
            log(
                f'recorded {sum(counts.values())} messages on {len(counts)} topics to {run_dir / "bag"} (rosbag2, MCAP)'
            )
        rclpy.shutdown(context=context)
        for name, code in supervisor.stop().items():
            log(f'stopped {name} (exit code {code})')
    outcome['elapsed_s'] = round(time.monotonic() - started, 1)
    outcome['log'] = steps
    (run_dir / 'report.json').write_text(json.dumps(outcome, indent=2))
    verdict = 'SUCCESS' if outcome['success'] else 'FAILURE'
    print(
        f'\n{verdict}: {outcome["reason"]}\n  time {outcome["elapsed_s"]} s\n  report {run_dir / "report.json"}'
        + (f'\n  planner report {outcome["planner_report"]}' if 'planner_report' in outcome else '')
        + (f'\n  recording {outcome["recording"]}' if 'recording' in outcome else '')
    )
    return 0 if outcome['success'] else 1


def _save_png(msg, path):
    from PIL import Image as PILImage

    PILImage.fromarray(image_array(msg)).save(path)
