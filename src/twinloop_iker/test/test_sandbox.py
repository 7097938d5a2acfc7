"""The sandbox for model-written code: every attack of the corpus is contained with its documented
kind, valid paper-style code returns the right InteractionData, and the runtime layers hold even
when the static check is skipped (where this machine allows them)."""

import subprocess

import pytest

from twinloop_core.engine import ConfigError
from twinloop_iker import sandbox
from twinloop_iker.sandbox import InteractionData, SandboxError, SandboxLimits, run_interaction_code

KEYPOINTS = {  # box: 1-4 (a 10 x 5 cm top face), tray: 5-6
    1: (0.50, -0.10, 0.05),
    2: (0.50, -0.05, 0.05),
    3: (0.60, -0.10, 0.05),
    4: (0.60, -0.05, 0.05),
    5: (0.40, 0.20, 0.02),
    6: (0.50, 0.30, 0.02),
}
OBJECTS = {'box': [1, 2, 3, 4], 'tray': [5, 6]}
WORKSPACE = ((-0.2, -0.75, 0.0), (0.95, 0.75, 1.0))
LIMITS = SandboxLimits(cpu_s=1.0, wall_s=10.0)  # the CPU limit ends the loop cases, even on a busy machine
VALID = "{'object_id': 'box', 'grasp': True, 'keypoint_indices': [1], 'target_positions': [[0.5, 0.1, 0.1]]}"
ESCAPE = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0].__init__.__globals__"


def fn(*lines):
    """get_interaction_data with these body lines (indented here)."""
    return 'def get_interaction_data(keypoint_coordinates):\n' + ''.join(f'    {line}\n' for line in lines)


def returning(**changes):
    """get_interaction_data returning the valid dict with some values replaced (source text)."""
    value = {
        'object_id': "'box'",
        'grasp': 'True',
        'keypoint_indices': '[1]',
        'target_positions': '[[0.5, 0.1, 0.1]]',
    }
    value.update(changes)
    return fn('return {' + ', '.join(f'{k!r}: {v}' for k, v in value.items() if v is not None) + '}')


def run(code, limits=LIMITS):
    return run_interaction_code(code, KEYPOINTS, OBJECTS, WORKSPACE, limits)


ATTACKS = [
    # imports, in every spelling
    ('import_os', 'import os\n' + fn(f'return {VALID}'), 'forbidden', 'imports are not allowed'),
    ('import_numpy_as_np', 'import numpy as np\n' + fn(f'return {VALID}'), 'forbidden', 'np is already provided'),
    ('import_inside_function', fn('import subprocess', f'return {VALID}'), 'forbidden', 'imports'),
    ('from_os_import_system', 'from os import system\n' + fn(f'return {VALID}'), 'forbidden', 'imports'),
    ('relative_import', 'from . import sandbox\n' + fn(f'return {VALID}'), 'forbidden', 'imports'),
    ('import_socket', fn('import socket', 'socket.socket().connect(("8.8.8.8", 53))'), 'forbidden', 'imports'),
    ('dunder_import', fn("os = __import__('os')"), 'forbidden', "'__import__'"),
    ('builtins_subscript_eval', fn("return __builtins__['eval']('1')"), 'forbidden', 'called by name'),
    ('builtins_name', fn('return __builtins__'), 'forbidden', "'__builtins__'"),
    ('importlib_via_builtins', fn("__builtins__.__import__('importlib').import_module('os')"), 'forbidden', '_'),
    # numpy's way out
    ('np_dict', fn('return np.__dict__'), 'forbidden', "'__dict__'"),
    ('np_lib', fn('return np.lib'), 'forbidden', 'np.lib is not allowed'),
    ('np_load_file', fn("return np.load('/etc/passwd')"), 'forbidden', 'np.load is not allowed'),
    ('np_save_dev_shm', fn("np.save('/dev/shm/x', keypoint_coordinates)"), 'forbidden', 'np.save'),
    ('np_sys_getframe', fn('return np.sys._getframe(1)'), 'forbidden', '_getframe'),
    ('np_ctypeslib', fn('return np.ctypeslib.as_ctypes(keypoint_coordinates)'), 'forbidden', 'np.ctypeslib'),
    ('np_float64_attribute', fn('return np.float64.fromhex("0x1p0")'), 'forbidden', 'np.float64.fromhex'),
    ('array_ctypes', fn('return keypoint_coordinates.ctypes'), 'forbidden', '.ctypes'),
    ('array_tofile_dev_shm', fn("keypoint_coordinates.tofile('/dev/shm/kp')"), 'forbidden', '.tofile'),
    # dunder and frame walks
    ('mro_subclasses', fn('return ().__class__.__mro__[1].__subclasses__()'), 'forbidden', "'__subclasses__'"),
    ('lambda_globals', fn('return (lambda: 0).__globals__'), 'forbidden', "'__globals__'"),
    ('function_globals', fn('return get_interaction_data.__globals__'), 'forbidden', "'__globals__'"),
    ('generator_frame', fn('g = (x for x in [1])', 'return g.gi_frame.f_back'), 'forbidden', 'generator'),
    ('yield_frame', 'def g():\n    yield 1\n' + fn('return g().gi_frame'), 'forbidden', 'yield'),
    ('os_environ', fn("return os.environ['OPENAI_API_KEY']"), 'forbidden', '.environ'),
    ('fork_bomb', fn('for i in range(100):', '    os.fork()'), 'forbidden', '.fork'),
    # format strings
    ('format_class', fn("return '{0.__class__}'.format(keypoint_coordinates)"), 'forbidden', '.format'),
    ('format_map', fn("return '{x.__class__}'.format_map({'x': 1})"), 'forbidden', '.format_map'),
    ('fstring_spec', fn("return f'{keypoint_coordinates:>1000000000}'"), 'forbidden', 'format spec'),
    ('fstring_dunder', fn("return f'{keypoint_coordinates.__class__}'"), 'forbidden', "'__class__'"),
    # decorators and definitions
    ('decorator', '@np.array\n' + fn(f'return {VALID}'), 'forbidden', 'decorators'),
    ('decorator_lambda', '@(lambda f: f)\n' + fn(f'return {VALID}'), 'forbidden', 'decorators'),
    ('default_calls', 'def get_interaction_data(k, x=open("/etc/passwd")):\n    return 1\n', 'forbidden', 'defaults'),
    ('class_def', 'class A:\n    pass\n' + fn(f'return {VALID}'), 'forbidden', 'classes'),
    ('async_def', 'async def get_interaction_data(k):\n    return 1\n', 'forbidden', 'async'),
    ('no_function', 'x = 1\n', 'forbidden', 'exactly once'),
    ('two_functions', fn('return 1') + fn('return 2'), 'forbidden', 'exactly once'),
    ('top_level_call', fn(f'return {VALID}') + 'get_interaction_data(1)\n', 'forbidden', 'top level'),
    ('two_parameters', 'def get_interaction_data(a, b):\n    return 1\n', 'forbidden', 'exactly one parameter'),
    # builtins lookups
    ('eval', fn("return eval('1 + 1')"), 'forbidden', "'eval'"),
    ('exec', fn("exec('x = 1')"), 'forbidden', "'exec'"),
    ('compile', fn("return compile('1', 'f', 'eval')"), 'forbidden', "'compile'"),
    ('getattr', fn("return getattr(np, 'array')"), 'forbidden', "'getattr'"),
    ('vars', fn('return vars()'), 'forbidden', "'vars'"),
    ('globals', fn("return globals()['np']"), 'forbidden', "'globals'"),
    ('type', fn('return type(1)'), 'forbidden', "'type'"),
    ('breakpoint', fn('breakpoint()'), 'forbidden', "'breakpoint'"),
    ('open_passwd', fn("return open('/etc/passwd')"), 'forbidden', "'open'"),
    # statements outside the allow-list
    ('while_true', fn('while True:', '    pass'), 'forbidden', 'while loops'),
    ('with_open', fn("with open('x') as f:", '    pass'), 'forbidden', 'with'),
    ('try_except', fn('try:', '    x = 1', 'except Exception:', '    pass'), 'forbidden', 'try'),
    ('raise', fn('raise ValueError(1)'), 'forbidden', 'raise'),
    ('global', fn('global np', 'np = 1'), 'forbidden', 'global'),
    ('del', fn('del keypoint_coordinates'), 'forbidden', 'del'),
    ('attribute_assign', fn('np.array = None'), 'forbidden', 'assigning to attributes'),
    ('rebind_np', fn('np = keypoint_coordinates', 'return np.ctypes'), 'forbidden', 'np cannot be assigned'),
    ('np_parameter', 'def get_interaction_data(np):\n    return np.ctypes\n', 'forbidden', "'np'"),
    ('walrus', fn('return (x := 1)'), 'forbidden', 'NamedExpr'),
    ('match', fn('match 1:', '    case 1:', '        pass'), 'forbidden', 'Match'),
    ('kwargs_unpack', fn("return dict(**{'a': 1})"), 'forbidden', '**keyword'),
    ('starred', fn('return max(*keypoint_coordinates)'), 'forbidden', 'starred'),
    ('call_of_subscript', fn('return [abs][0](-1)'), 'forbidden', 'called by name'),
    ('bytes', fn("return b'x'"), 'forbidden', 'bytes'),
    ('long_string', fn("return '" + 'a' * 5000 + "'"), 'forbidden', 'string constant'),
    ('too_long', '#' * 30000, 'forbidden', 'characters'),
    ('deep_nesting', fn('return ' + '-' * 19000 + '1'), 'forbidden', 'nested too deeply'),
    # syntax
    ('missing_colon', 'def get_interaction_data(k)\n    return 1\n', 'syntax', 'line 1'),
    ('null_byte', fn('return 1\x00'), 'syntax', 'null bytes'),
    ('break_outside_loop', fn('break'), 'syntax', "'break' outside loop"),
    # time
    ('huge_range', fn('for i in range(10**12):', '    pass'), 'timeout', 'CPU time'),
    (
        'nested_loops',
        fn('x = 0', 'for i in range(10**6):', '    for j in range(10**6):', '        x += 1'),
        'timeout',
        '',
    ),
    # memory
    ('list_bomb', fn('return [0] * 10**10'), 'memory', 'MemoryError'),
    ('string_bomb', fn("return 'a' * 10**10"), 'memory', 'MemoryError'),
    ('np_zeros_bomb', fn('return np.zeros(10**10)'), 'memory', 'Unable to allocate'),
    ('np_ones_2d_bomb', fn('return np.ones((10**5, 10**5))'), 'memory', 'Unable to allocate'),
    ('doubling_bomb', fn('x = [0]', 'for i in range(64):', '    x = x + x'), 'memory', 'MemoryError'),
    # exceptions inside the code
    ('zero_division', fn('return 1 / 0'), 'runtime', 'ZeroDivisionError: division by zero (line 2)'),
    ('recursion_bomb', 'def f(n):\n    return f(n + 1)\n\n\n' + fn('return f(0)'), 'runtime', 'RecursionError'),
    ('os_name', fn('return os.getcwd'), 'forbidden', '.getcwd'),
    ('socket_name', fn('return socket(2, 1)'), 'runtime', "NameError: name 'socket' is not defined"),
    ('print_name', fn("print('x')"), 'runtime', "name 'print' is not defined"),
    ('paper_string_keys', fn("return keypoint_coordinates['1']"), 'runtime', 'IndexError'),
    ('keypoint_out_of_range', fn('return keypoint_coordinates[99]'), 'runtime', 'IndexError'),
    ('numpy_divide_by_zero', fn('return np.array([1.0]) / 0.0'), 'runtime', 'FloatingPointError'),
    # output
    ('paper_tuple', fn("return 'box', [1], True, keypoint_coordinates"), 'output', 'must return a dict'),
    ('returns_none', fn('return None'), 'output', 'not a NoneType'),
    ('missing_key', returning(grasp=None), 'output', "missing keys ['grasp']"),
    ('unknown_key', returning(speed='1.0'), 'output', "unknown keys ['speed']"),
    ('nan_target', returning(target_positions="[[float('nan'), 0.0, 0.1]]"), 'output', 'not finite'),
    ('inf_target', returning(target_positions="[[0.5, float('inf'), 0.1]]"), 'output', 'not finite'),
    ('outside_workspace', returning(target_positions='[[5.0, 0.0, 0.1]]'), 'output', 'x must be in [-0.2, 0.95]'),
    ('below_table', returning(target_positions='[[0.5, 0.0, -0.1]]'), 'output', 'z must be in [0.0, 1.0]'),
    ('string_targets', returning(target_positions="'up'"), 'output', 'target_positions must be a list'),
    ('two_coordinates', returning(target_positions='[[0.5, 0.1]]'), 'output', 'target_positions[0] must be [x, y, z]'),
    ('string_coordinate', returning(target_positions="[['0.5', 0.1, 0.1]]"), 'output', 'must be [x, y, z]'),
    ('length_mismatch', returning(keypoint_indices='[1, 2]'), 'output', 'list of 2 [x, y, z]'),
    ('unknown_object', returning(object_id="'shoe'"), 'output', "object_id 'shoe' is not an object"),
    (
        'foreign_keypoint',
        returning(keypoint_indices='[5]'),
        'output',
        "keypoint_indices[0] = 5 is not a keypoint of 'box'",
    ),
    ('missing_keypoint', returning(keypoint_indices='[42]'), 'output', 'keypoint_indices[0] = 42'),
    ('bool_index', returning(keypoint_indices='[True]'), 'output', 'keypoint_indices[0] must be an int'),
    ('float_index', returning(keypoint_indices='[1.0]'), 'output', 'keypoint_indices[0] must be an int'),
    ('empty_indices', returning(keypoint_indices='[]', target_positions='[]'), 'output', 'non-empty'),
    (
        'repeated_indices',
        returning(keypoint_indices='[1, 1]', target_positions='[[0.5, 0.1, 0.1]] * 2'),
        'output',
        'repeated',
    ),
    ('grasp_not_bool', returning(grasp='1'), 'output', 'grasp must be true'),
    ('done_not_bool', returning(done="'yes'"), 'output', 'done must be true or false'),
    ('plan_too_long', returning(plan="'p' * 5000"), 'output', 'plan must be a str'),
    (
        'huge_output',
        returning(keypoint_indices='[1] * 10000', target_positions='[[0.5, 0.1, 0.1]] * 10000'),
        'output',
        'bytes of JSON',
    ),
    ('function_output', returning(object_id='get_interaction_data'), 'output', 'not JSON data'),
    ('circular_output', fn('x = []', 'x.append(x)', 'return x'), 'output', 'not JSON data'),
]


@pytest.mark.parametrize('code, kind, fragment', [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_attack_is_contained(code, kind, fragment):
    with pytest.raises(SandboxError) as caught:
        run(code)
    assert caught.value.kind == kind, caught.value.message
    assert fragment in caught.value.message
    assert caught.value.kind in sandbox.KINDS


def test_the_corpus_is_large_and_names_every_kind_but_killed():
    assert len(ATTACKS) >= 45
    assert {kind for _, _, kind, _ in ATTACKS} == set(sandbox.KINDS) - {'killed'}


def test_code_that_is_not_a_string():
    with pytest.raises(SandboxError, match='must be a str') as caught:
        run(None)
    assert caught.value.kind == 'syntax'


def test_wall_time_limit_kills_the_process():
    with pytest.raises(SandboxError, match='wall time') as caught:
        run(fn('for i in range(10**12):', '    pass'), SandboxLimits(cpu_s=30.0, wall_s=0.5))
    assert caught.value.kind == 'timeout'


PLACE_ON_TRAY = '''
LIFT = 0.02


def centre(points):
    """The mean of some keypoints."""
    return np.mean(np.array(points), axis=0)


def get_interaction_data(keypoint_coordinates):
    """Put the box on the tray: keep the box's shape, move its centre above the tray's centre."""
    box = [1, 2, 3, 4]
    box_centre = centre([keypoint_coordinates[i] for i in box])
    tray_centre = centre([keypoint_coordinates[5], keypoint_coordinates[6]])
    shift = tray_centre - box_centre + np.array([0.0, 0.0, LIFT + 0.03])
    for i in box:
        keypoint_coordinates[i] = keypoint_coordinates[i] + shift
    nearest = int(np.argmin([np.linalg.norm(keypoint_coordinates[i] - tray_centre) for i in box]))
    return {
        'object_id': 'box',
        'grasp': True,
        'keypoint_indices': box,
        'target_positions': [keypoint_coordinates[i] for i in box],
        'plan': f'place the box, nearest keypoint {box[nearest]}',
    }
'''


def test_paper_style_code_returns_the_interaction():
    result = run(PLACE_ON_TRAY)
    assert isinstance(result, InteractionData)
    assert (result.object_id, result.grasp, result.keypoint_indices, result.done) == ('box', True, (1, 2, 3, 4), False)
    shift = (0.45 - 0.55, 0.25 - (-0.075), 0.02 - 0.05 + 0.05)  # tray centre - box centre, 5 cm up
    for index, target in zip(result.keypoint_indices, result.target_positions):
        assert target == pytest.approx(tuple(k + s for k, s in zip(KEYPOINTS[index], shift)))
    assert result.plan.startswith('place the box, nearest keypoint ')


def test_done_without_an_interaction_and_numpy_values():
    assert run(fn("return {'done': True, 'plan': 'the box is on the tray'}")) == InteractionData(
        '', False, (), (), done=True, plan='the box is on the tray'
    )
    result = run(
        fn(
            'i = np.argmin(np.array([3.0, 1.0, 2.0, 0.5]))',  # numpy int64 -> 3
            "return {'object_id': 'box', 'grasp': np.array([1.0])[0] > 0, 'keypoint_indices': [i + 1],",
            "        'target_positions': np.array([[0.5, 0.1, 0.1]])}",
        )
    )
    assert result.keypoint_indices == (4,) and result.grasp is True and result.target_positions == ((0.5, 0.1, 0.1),)


def test_keypoint_rows_put_keypoint_i_in_row_i():
    rows = sandbox.keypoint_rows({1: (1, 2, 3), 3: (4, 5, 6)})
    assert len(rows) == 4 and rows[1] == [1.0, 2.0, 3.0] and rows[3] == [4.0, 5.0, 6.0]
    assert all(v != v for v in rows[0] + rows[2])  # NaN


def test_the_child_gets_an_empty_environment(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-test-not-a-key')
    started = []
    popen = subprocess.Popen

    def spy(*args, **kwargs):
        started.append(kwargs)
        return popen(*args, **kwargs)

    monkeypatch.setattr(sandbox.subprocess, 'Popen', spy)
    sandbox.active_layers.cache_clear()
    try:
        layers = sandbox.active_layers()
    finally:
        sandbox.active_layers.cache_clear()
    assert started and started[0]['env'] == {} and started[0]['close_fds'] is True
    assert layers['empty_env'] is True and layers['separate_process'] is True
    environ = sandbox._run_child(fn(f'return dict({ESCAPE}["environ"])'), [], LIMITS)  # static check skipped
    assert environ['result'] == {}


def layer(name):
    return sandbox.active_layers()[name]


BYPASSES = [  # code that passes no static check, run straight in the child: the runtime layers must hold
    ('fork', 'seccomp', fn(f'return {ESCAPE}["fork"]()'), 'PermissionError'),
    ('system', 'seccomp', fn(f'return {ESCAPE}["system"]("touch /tmp/twinloop_sandbox_escape")'), None),
    ('socket', 'no_network', fn(f'return {ESCAPE}["sys"].modules["_socket"].socket(2, 1).fileno()'), 'Error'),
    ('write_dev_shm', 'seccomp', fn(f'return {ESCAPE}["open"]("/dev/shm/twinloop_escape", 65)'), 'PermissionError'),
    ('read_root', 'unprivileged', fn(f'return {ESCAPE}["listdir"]("/root")'), 'Error'),
    ('new_files', 'rlimits', fn(f'return {ESCAPE}["open"]("/etc/hostname", 0)'), 'Too many open files'),
]


@pytest.mark.parametrize('needs, code, fragment', [b[1:] for b in BYPASSES], ids=[b[0] for b in BYPASSES])
def test_runtime_layers_hold_without_the_static_check(needs, code, fragment):
    if not layer(needs):
        pytest.skip(f'the {needs} layer is not active on this machine')
    reply = sandbox._run_child(code, [], LIMITS)
    if fragment is None:  # os.system cannot start a shell: it returns the shell's failure status
        assert reply['result'] != 0
    else:
        assert reply['error']['kind'] == 'runtime' and fragment in reply['error']['message']


def test_a_crashing_child_is_reported_as_killed():
    with pytest.raises(SandboxError, match='SIGABRT') as caught:
        sandbox._run_child(fn(f'return {ESCAPE}["abort"]()'), [], LIMITS)
    assert caught.value.kind == 'killed'


def test_no_network_layer():
    layers = sandbox.active_layers()
    if not layers['no_network']:
        pytest.skip('neither a network namespace nor seccomp is available here')
    assert layers['no_network'] in ('netns', 'seccomp')
    assert set(layers) == {
        'ast_allow_list',
        'separate_process',
        'rlimits',
        'unprivileged',
        'no_network',
        'seccomp',
        'empty_env',
    }


def test_validate_interaction_accepts_python_values():
    value = {'object_id': 'tray', 'grasp': False, 'keypoint_indices': (5, 6), 'target_positions': ((0, 0, 0.1),) * 2}
    result = sandbox.validate_interaction(value, KEYPOINTS, OBJECTS, WORKSPACE)
    assert result.target_positions == ((0.0, 0.0, 0.1), (0.0, 0.0, 0.1)) and result.grasp is False


def test_limits_must_be_positive():
    with pytest.raises(ConfigError, match='cpu_s must be > 0'):
        SandboxLimits(cpu_s=0.0)
