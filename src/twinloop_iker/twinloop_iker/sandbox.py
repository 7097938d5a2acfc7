"""A sandbox for model-written code: IKER's `get_interaction_data(keypoint_coordinates)`.

In IKER (shared/seeds/002, Sec. III-A and Appendix B) a VLM writes a Python function that says
which object to move, whether to grasp or push it, and where its keypoints must go. That code is
untrusted, so it passes three layers, each enough to stop what the others miss:

1. Static (`check_code`): the source is parsed with `ast` and every node is checked against an
   allow-list: one top-level `get_interaction_data` (plus helper functions and top-level
   constants), assignments, `for` and `if`, expressions, calls of the safe builtins, of allowed
   `np.<name>` functions and of a few value methods (VALUE_ATTRIBUTES: list, dict and ndarray
   methods that neither reach objects' internals nor touch files; `np` cannot be rebound, so an
   `np.<name>` is always the provided one). No imports, no names or attributes starting with
   `_`, no `while` (`for` is the only loop: every iterable this language can build is finite,
   and the CPU limit bounds how long a loop takes), no generators, classes, `with`,
   `try`/`raise`, `global`, decorators, starred arguments or formatted f-string fields.
2. Runtime (`sandbox_child.py`): the code runs in a fresh `python -I -S` process with an empty
   environment, only stdin/stdout/stderr pipes, a safe `__builtins__`, a read-only `np` of the
   allowed names, a fresh network namespace, privileges dropped to nobody, a seccomp filter and
   resource limits (CPU, address space, no files, no processes); the parent kills it after the
   wall-time limit. Layers the host does not allow (no root, no libseccomp) are left out and
   reported by `active_layers`.
3. Output (`validate_interaction`): the JSON the function returns must name an object of the
   scene, existing keypoints of that object and finite targets inside the workspace box.

Every failure is a SandboxError whose `kind` is one of KINDS; the message says what was wrong, so
it can go back to the VLM for another attempt.
"""

import ast
import functools
import importlib.util
import json
import math
import signal
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from twinloop_core.engine import ConfigError
from twinloop_iker.sandbox_child import CODE_FILENAME, FUNCTION, NUMPY_NAMES

CHILD = Path(__file__).with_name('sandbox_child.py')
KINDS = {
    'syntax': 'the code does not parse or compile',
    'forbidden': 'the static check refused a construct, a name or an attribute',
    'timeout': 'the code used more than its CPU time or wall time',
    'memory': 'the code asked for more memory than its limit',
    'runtime': 'the code raised an exception (the message names it and the line)',
    'output': 'the returned value does not match the interaction schema',
    'killed': 'the sandbox process ended without a reply (a signal, a crash, or it could not start)',
}
NUMPY_PACKAGES = {name.rsplit('.', 1)[0] for name in NUMPY_NAMES if '.' in name}
VALUE_ATTRIBUTES = {
    'T',
    'append',
    'copy',
    'extend',
    'flatten',
    'get',
    'index',
    'insert',
    'items',
    'keys',
    'max',
    'mean',
    'min',
    'pop',
    'reshape',
    'shape',
    'sum',
    'tolist',
    'values',
}
DENIED_NAMES = {
    'breakpoint',
    'bytearray',
    'compile',
    'delattr',
    'eval',
    'exec',
    'getattr',
    'globals',
    'hasattr',
    'help',
    'input',
    'locals',
    'memoryview',
    'object',
    'open',
    'setattr',
    'super',
    'type',
    'vars',
}
ALLOWED_NODES = (
    # statements
    ast.Module,
    ast.FunctionDef,
    ast.arguments,
    ast.arg,
    ast.Return,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.For,
    ast.If,
    ast.Expr,
    ast.Pass,
    ast.Break,
    ast.Continue,
    # expressions
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.keyword,
    ast.Name,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.Set,
    ast.ListComp,
    ast.DictComp,
    ast.SetComp,
    ast.comprehension,
    ast.Subscript,
    ast.Slice,
    ast.Attribute,
    ast.Lambda,
    ast.JoinedStr,
    ast.FormattedValue,
    # contexts and operators
    ast.Load,
    ast.Store,
    ast.boolop,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
)
REFUSALS = {  # why common constructs are refused, worded for the model
    ast.Import: 'imports are not allowed (np is already provided; remove the import)',
    ast.ImportFrom: 'imports are not allowed (np is already provided; remove the import)',
    ast.While: 'while loops are not allowed; use a for loop over range(...)',
    ast.GeneratorExp: 'generator expressions are not allowed; use a list comprehension',
    ast.Yield: 'yield is not allowed',
    ast.YieldFrom: 'yield is not allowed',
    ast.ClassDef: 'classes are not allowed',
    ast.Try: 'try/except is not allowed',
    ast.Raise: 'raise is not allowed',
    ast.With: 'with is not allowed',
    ast.Global: 'global is not allowed',
    ast.Nonlocal: 'nonlocal is not allowed',
    ast.Delete: 'del is not allowed',
    ast.Starred: 'starred expressions are not allowed',
    ast.AsyncFunctionDef: 'async functions are not allowed',
}
INTERACTION_KEYS = ('object_id', 'grasp', 'keypoint_indices', 'target_positions')
OPTIONAL_KEYS = ('done', 'plan')
PROBE = f'def {FUNCTION}(keypoint_coordinates):\n    return {{"done": True}}\n'
STDERR_TAIL = 300  # characters of the child's stderr quoted in a 'killed' message


class SandboxError(Exception):
    """Model code refused or failed; `kind` is one of KINDS, `message` says what was wrong."""

    def __init__(self, kind, message):
        super().__init__(f'{kind}: {message}')
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run (config/iker.yaml, block sandbox)."""

    cpu_s: float = 2.0  # CPU seconds of the code (SIGXCPU)
    wall_s: float = 5.0  # [s] the parent kills the process after this, start-up included
    memory_mb: int = 512  # address space the code may add to the interpreter's and numpy's
    max_output_bytes: int = 65536  # JSON of the returned value
    max_code_chars: int = 20000
    max_nodes: int = 5000  # syntax tree nodes
    max_string_chars: int = 4000  # per string constant (docstrings included)
    max_plan_chars: int = 2000  # the returned plan text

    def __post_init__(self):
        """Every limit positive."""
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ConfigError(f'SandboxLimits.{f.name} must be > 0, got {getattr(self, f.name)!r}')


@dataclass(frozen=True)
class InteractionData:
    """What the code asks for: move object_id's keypoints to target_positions (grasp or push)."""

    object_id: str  # '' when done without a further interaction
    grasp: bool  # True: grasp and place; False: push
    keypoint_indices: tuple  # of int, keypoints of object_id
    target_positions: tuple  # of (x, y, z) [m], world frame, one per keypoint index
    done: bool = False  # the model judges the whole task complete
    plan: str = ''  # the model's plan or stage description (multi-step prompts)


def _forbidden(node, message):
    return SandboxError('forbidden', f'{message} (line {getattr(node, "lineno", "?")})')


def _numpy_path(node):
    """'linalg.norm' for the expression np.linalg.norm; None when it does not start at the name np."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id == 'np':
        return '.'.join(reversed(parts))
    return None


def _check_arguments(node):
    args = node.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
        raise _forbidden(node, 'only plain positional parameters are allowed (no *args, **kwargs or keyword-only)')
    if any(not isinstance(default, ast.Constant) for default in args.defaults):
        raise _forbidden(node, 'parameter defaults must be constants')


def _check_node(node, limits):
    """Raise SandboxError('forbidden') when this one node is not allowed."""
    if not isinstance(node, ALLOWED_NODES):
        raise _forbidden(node, REFUSALS.get(type(node), f'{type(node).__name__} is not allowed'))
    if isinstance(node, ast.Name):
        if node.id.startswith('_') or node.id in DENIED_NAMES:
            raise _forbidden(node, f'the name {node.id!r} is not allowed')
        if node.id == 'np' and not isinstance(node.ctx, ast.Load):
            raise _forbidden(node, 'np cannot be assigned to')
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith('_'):
            raise _forbidden(node, f'the attribute {node.attr!r} is not allowed (no names starting with _)')
        if not isinstance(node.ctx, ast.Load):
            raise _forbidden(node, 'assigning to attributes is not allowed')
        path = _numpy_path(node)
        if path is not None and path not in NUMPY_NAMES and path not in NUMPY_PACKAGES:
            raise _forbidden(node, f'np.{path} is not allowed; allowed: np.{", np.".join(NUMPY_NAMES)}')
        if path is None and node.attr not in VALUE_ATTRIBUTES:
            raise _forbidden(node, f'the attribute .{node.attr} is not allowed; allowed: {sorted(VALUE_ATTRIBUTES)}')
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, (ast.Name, ast.Attribute)):
            raise _forbidden(node, 'only functions called by name or as np.<name> / value.<method> are allowed')
    elif isinstance(node, ast.keyword):
        if node.arg is None or node.arg.startswith('_'):
            raise _forbidden(node, '**keyword unpacking and keywords starting with _ are not allowed')
    elif isinstance(node, ast.FunctionDef):
        if node.decorator_list:
            raise _forbidden(node, 'decorators are not allowed')
        if node.name.startswith('_') or node.name in DENIED_NAMES:
            raise _forbidden(node, f'the function name {node.name!r} is not allowed')
        _check_arguments(node)
    elif isinstance(node, ast.Lambda):
        _check_arguments(node)
    elif isinstance(node, ast.arg):
        if node.arg.startswith('_') or node.arg == 'np':
            raise _forbidden(node, f'the parameter name {node.arg!r} is not allowed')
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bytes):
            raise _forbidden(node, 'bytes constants are not allowed')
        if isinstance(node.value, str) and len(node.value) > limits.max_string_chars:
            raise _forbidden(node, f'a string constant longer than {limits.max_string_chars} characters')
    elif isinstance(node, ast.comprehension):
        if node.is_async:
            raise _forbidden(node, 'async comprehensions are not allowed')
    elif isinstance(node, ast.FormattedValue):
        if node.format_spec is not None or node.conversion != -1:
            raise _forbidden(node, 'f-string fields with a format spec or conversion are not allowed')


def _check_top_level(tree):
    """Top level: functions (one named get_interaction_data), constants, a docstring."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if all(isinstance(t, ast.Name) for t in targets):
                continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        raise _forbidden(node, 'only function definitions and NAME = value assignments are allowed at the top level')
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == FUNCTION]
    if len(functions) != 1:
        raise SandboxError('forbidden', f'the code must define {FUNCTION}(keypoint_coordinates) exactly once')
    if len(functions[0].args.args) != 1:
        raise _forbidden(functions[0], f'{FUNCTION} takes exactly one parameter (keypoint_coordinates)')


def check_code(code, limits=SandboxLimits()):
    """Layer 1: parse the code and check every node against the allow-list; SandboxError when refused."""
    if not isinstance(code, str):
        raise SandboxError('syntax', f'the code must be a str, not {type(code).__name__}')
    if len(code) > limits.max_code_chars:
        raise SandboxError('forbidden', f'the code has {len(code)} characters, more than the {limits.max_code_chars}')
    try:
        tree = ast.parse(code, CODE_FILENAME)
    except SyntaxError as error:
        raise SandboxError('syntax', error.msg + (f' (line {error.lineno})' if error.lineno else '')) from None
    except ValueError as error:  # null bytes (older Pythons)
        raise SandboxError('syntax', str(error)) from None
    except (RecursionError, MemoryError):
        raise SandboxError('forbidden', 'the code is nested too deeply') from None
    nodes = 0
    for node in ast.walk(tree):
        nodes += 1
        if nodes > limits.max_nodes:
            raise SandboxError('forbidden', f'the code has more than {limits.max_nodes} syntax nodes')
        _check_node(node, limits)
    _check_top_level(tree)
    return tree


@functools.cache
def _import_paths():
    """The folders the child imports numpy and pyseccomp from (it starts without site-packages)."""
    paths = []
    for module in ('numpy', 'pyseccomp'):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        folder = str(origin.parent.parent if spec.submodule_search_locations else origin.parent)
        if folder not in paths:
            paths.append(folder)
    return paths


def _died(returncode, stderr):
    """The SandboxError for a child that ended without a reply."""
    if returncode == -signal.SIGXCPU:
        return SandboxError('timeout', 'the code used more than its CPU time limit')
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return SandboxError('killed', f'the sandbox process was ended by {name}')
    tail = stderr.decode(errors='replace').strip()[-STDERR_TAIL:]
    return SandboxError('killed', f'the sandbox process exited with status {returncode} without a reply: {tail}')


def _run_child(code, keypoint_rows, limits):
    """The child's reply ({'result' | 'error', 'layers'}) for code (not checked here) and keypoint rows."""
    request = {
        'code': code,
        'keypoints': keypoint_rows,
        'paths': _import_paths(),
        'limits': {'cpu_s': limits.cpu_s, 'memory_mb': limits.memory_mb, 'max_output_bytes': limits.max_output_bytes},
    }
    try:
        process = subprocess.Popen(
            [sys.executable, '-I', '-S', '-B', str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            cwd='/',
            close_fds=True,
            start_new_session=True,
        )
    except OSError as error:
        raise SandboxError('killed', f'the sandbox process could not start: {error}') from None
    try:
        stdout, stderr = process.communicate(json.dumps(request).encode(), timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise SandboxError('timeout', f'the code ran longer than {limits.wall_s} s (wall time)') from None
    if len(stdout) > limits.max_output_bytes + 4096:  # room for the error and layers envelope
        raise SandboxError('output', f'the sandbox replied {len(stdout)} bytes, more than allowed')
    try:
        reply = json.loads(stdout)
    except ValueError:
        raise _died(process.returncode, stderr) from None
    if not isinstance(reply, dict) or not ('result' in reply or 'error' in reply):
        raise _died(process.returncode, stderr)
    return reply


def keypoint_rows(keypoints):
    """keypoint number -> (x, y, z) as the rows of the (N, 3) array the code sees: row i is keypoint i,
    rows without a keypoint (row 0 when numbering starts at 1) are NaN."""
    count = max(keypoints, default=-1) + 1
    rows = [[math.nan] * 3 for _ in range(count)]
    for index, position in keypoints.items():
        rows[index] = [float(v) for v in position]
    return rows


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _output_error(message):
    return SandboxError('output', message)


def validate_interaction(value, keypoints, objects, workspace, max_plan_chars=2000):
    """Layer 3: the returned value as InteractionData, or SandboxError('output') saying what is wrong.

    keypoints: keypoint number -> (x, y, z); objects: object id -> its keypoint numbers;
    workspace: ((x, y, z) min, (x, y, z) max) [m] every target must lie in.
    """
    allowed = INTERACTION_KEYS + OPTIONAL_KEYS
    if not isinstance(value, dict):
        raise _output_error(f'{FUNCTION} must return a dict with keys {list(allowed)}, not a {type(value).__name__}')
    unknown = sorted(str(k) for k in set(value) - set(allowed))
    if unknown:
        raise _output_error(f'unknown keys {unknown}; allowed: {list(allowed)}')
    done = value.get('done', False)
    if not isinstance(done, bool):
        raise _output_error(f'done must be true or false, not {done!r}')
    plan = value.get('plan', '')
    if not isinstance(plan, str) or len(plan) > max_plan_chars:
        raise _output_error(f'plan must be a str of at most {max_plan_chars} characters')
    if done and not set(INTERACTION_KEYS) & set(value):
        return InteractionData('', False, (), (), done=True, plan=plan)
    missing = [k for k in INTERACTION_KEYS if k not in value]
    if missing:
        raise _output_error(f'missing keys {missing}')
    object_id = value['object_id']
    if not isinstance(object_id, str) or object_id not in objects:
        raise _output_error(f'object_id {object_id!r} is not an object of the scene; objects: {sorted(objects)}')
    if not isinstance(value['grasp'], bool):
        raise _output_error(f'grasp must be true (grasp and place) or false (push), not {value["grasp"]!r}')
    indices = value['keypoint_indices']
    own = sorted(objects[object_id])
    if not isinstance(indices, (list, tuple)) or not indices:
        raise _output_error(f'keypoint_indices must be a non-empty list of keypoint numbers, not {indices!r}')
    for i, index in enumerate(indices):
        if not isinstance(index, int) or isinstance(index, bool):
            raise _output_error(f'keypoint_indices[{i}] must be an int, not {index!r}')
        if index not in keypoints or index not in own:
            raise _output_error(
                f'keypoint_indices[{i}] = {index} is not a keypoint of {object_id!r} (its keypoints: {own})'
            )
    if len(set(indices)) != len(indices):
        raise _output_error(f'keypoint_indices has repeated keypoints: {list(indices)}')
    targets = value['target_positions']
    if not isinstance(targets, (list, tuple)) or len(targets) != len(indices):
        raise _output_error(f'target_positions must be a list of {len(indices)} [x, y, z] (one per keypoint index)')
    low, high = workspace
    checked = []
    for i, target in enumerate(targets):
        if not isinstance(target, (list, tuple)) or len(target) != 3 or not all(_is_number(v) for v in target):
            raise _output_error(f'target_positions[{i}] must be [x, y, z] numbers, not {target!r}')
        if not all(math.isfinite(v) for v in target):
            raise _output_error(f'target_positions[{i}] = {list(target)} is not finite')
        for axis, v, lo, hi in zip('xyz', target, low, high):
            if not lo <= v <= hi:
                raise _output_error(
                    f'target_positions[{i}] = {list(target)} is outside the workspace: {axis} must be in [{lo}, {hi}]'
                )
        checked.append(tuple(float(v) for v in target))
    return InteractionData(object_id, value['grasp'], tuple(indices), tuple(checked), done=done, plan=plan)


def run_interaction_code(code, keypoints, objects, workspace, limits=SandboxLimits()):
    """Check, run and validate model-written code; InteractionData, or SandboxError (kind in KINDS).

    keypoints: keypoint number -> (x, y, z) [m]; the code gets them as an (N, 3) array whose row i
    is keypoint i (keypoint_rows). objects: object id -> its keypoint numbers. workspace: ((x, y, z)
    min, (x, y, z) max) [m]. Only SandboxError is raised for anything the code does.
    """
    check_code(code, limits)
    reply = _run_child(code, keypoint_rows(keypoints), limits)
    if 'error' in reply:
        error = reply['error'] if isinstance(reply['error'], dict) else {}
        kind = error.get('kind') if error.get('kind') in KINDS else 'killed'
        raise SandboxError(kind, str(error.get('message', 'the sandbox replied an error without a message')))
    return validate_interaction(reply['result'], keypoints, objects, workspace, limits.max_plan_chars)


@functools.cache
def active_layers():
    """Which containment layers work on this machine (a probe run in the sandbox, once per process).

    {'ast_allow_list', 'separate_process', 'rlimits', 'unprivileged', 'seccomp', 'empty_env': bool,
    'no_network': 'netns' | 'seccomp' | False}.
    """
    layers = {'ast_allow_list': True, 'separate_process': False, 'rlimits': False, 'unprivileged': False}
    layers.update({'no_network': False, 'seccomp': False, 'empty_env': False})
    try:
        check_code(PROBE)
        reply = _run_child(PROBE, [], SandboxLimits())
    except SandboxError:
        return layers
    layers['separate_process'] = True
    layers.update({k: v for k, v in reply.get('layers', {}).items() if k in layers})
    return layers
