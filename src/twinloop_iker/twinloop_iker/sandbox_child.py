"""The sandbox's child process: contains itself, runs the model's function once, answers in JSON.

Started by `twinloop_iker.sandbox` as `python -I -S -B sandbox_child.py` with an empty environment,
so it imports nothing of twinloop: only the standard library, numpy and (optionally) pyseccomp,
from the folders the parent names. It reads one JSON request from stdin and writes one JSON reply
to stdout. Before the model's code runs, in this order (each step needs the one before to be
still allowed):

1. numpy (with one BLAS thread: no threads to start later, a small address space), pyseccomp and
   _socket are imported while the site-packages folder is still readable;
2. network: a fresh, empty network namespace (unshare(CLONE_NEWNET), as root or in a new user
   namespace), checked by the namespace link changing;
3. privileges: as root, drop to nobody (uid/gid 65534, no groups), so RLIMIT_NPROC and file
   permissions apply;
4. seccomp (pyseccomp, when installed and libseccomp loads): sockets, fork/clone/exec, ptrace,
   namespace and mount calls and opening files for writing fail with EPERM; checked by trying a
   socket;
5. resource limits: CPU seconds (SIGXCPU ends the process), address space (MemoryError), no new
   file descriptors, no processes, no file writes, no core dumps.

The code then runs in a namespace whose `__builtins__` is the safe set and whose `np` is a
read-only namespace of the allowed numpy names (the same lists the static check reads). The
reply names the layers that are active, so the parent can report them.
"""

import _socket
import builtins
import json
import math
import os
import resource
import sys
import types

SAFE_BUILTINS = (
    'abs',
    'all',
    'any',
    'bool',
    'dict',
    'enumerate',
    'float',
    'int',
    'len',
    'list',
    'max',
    'min',
    'range',
    'round',
    'sorted',
    'sum',
    'tuple',
    'zip',
)
NUMPY_NAMES = (
    'abs',
    'add',
    'arccos',
    'arcsin',
    'arctan2',
    'argmax',
    'argmin',
    'array',
    'asarray',
    'clip',
    'concatenate',
    'cos',
    'cross',
    'deg2rad',
    'degrees',
    'divide',
    'dot',
    'float64',
    'linalg.norm',
    'max',
    'maximum',
    'mean',
    'min',
    'minimum',
    'multiply',
    'ones',
    'pi',
    'rad2deg',
    'radians',
    'round',
    'sin',
    'sqrt',
    'stack',
    'subtract',
    'sum',
    'tan',
    'where',
    'zeros',
)
CODE_FILENAME = '<interaction_code>'
FUNCTION = 'get_interaction_data'
MAX_REQUEST = 4 * 2**20  # bytes read from stdin
MAX_MESSAGE = 500  # characters of an error message
NOBODY = 65534
PYTHON_SETS = {'LC_CTYPE'}  # the interpreter's own locale coercion (PEP 538) may set it
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
DENIED_SYSCALLS = (
    'socket',
    'socketpair',
    'connect',
    'bind',
    'listen',
    'accept',
    'accept4',
    'fork',
    'vfork',
    'clone',
    'clone3',
    'execve',
    'execveat',
    'ptrace',
    'kill',
    'unshare',
    'setns',
    'mount',
    'chroot',
)


class ReadOnlyNamespace(types.SimpleNamespace):
    """A namespace whose attributes cannot be set or deleted (the `np` the code sees)."""

    def __setattr__(self, name, value):
        raise AttributeError(f'{name} is read-only')

    def __delattr__(self, name):
        raise AttributeError(f'{name} is read-only')


def numpy_proxy(np):
    """`np` for the code: only NUMPY_NAMES, dotted names as nested read-only namespaces."""
    tree = {}
    for dotted in NUMPY_NAMES:
        *packages, name = dotted.split('.')
        node, source = tree, np
        for package in packages:
            node, source = node.setdefault(package, {}), getattr(source, package)
        node[name] = getattr(source, name)

    def build(node):
        return ReadOnlyNamespace(**{k: build(v) if isinstance(v, dict) else v for k, v in node.items()})

    return build(tree)


def isolate_network():
    """'netns' when this process now has a fresh network namespace (loopback only, down), else False."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        before = os.readlink('/proc/self/ns/net')
        for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
            if libc.unshare(flags) == 0 and os.readlink('/proc/self/ns/net') != before:
                return 'netns'
    except (OSError, AttributeError):
        pass
    return False


def drop_privileges():
    """As root, become nobody; True when the process no longer runs as root."""
    if os.geteuid() == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        except OSError:
            return False
    return os.geteuid() != 0


def load_seccomp(sc):
    """Deny DENIED_SYSCALLS and opening files for writing (sc: the pyseccomp module or None); True
    when a socket is then refused."""
    if sc is None:
        return False
    try:
        rules = sc.SyscallFilter(sc.ALLOW)
        for name in DENIED_SYSCALLS:
            try:
                rules.add_rule(sc.ERRNO(1), name)
            except Exception:  # a call this architecture does not have (libseccomp raises various errors)
                continue
        for name, flags_arg in (('open', 1), ('openat', 2)):
            for mask, value in ((os.O_ACCMODE, os.O_WRONLY), (os.O_ACCMODE, os.O_RDWR), (os.O_CREAT, os.O_CREAT)):
                try:
                    rules.add_rule(sc.ERRNO(1), name, sc.Arg(flags_arg, sc.MASKED_EQ, mask, value))
                except Exception:
                    continue
        rules.load()
    except Exception:  # the kernel refuses filters
        return False
    try:
        _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM).close()
    except PermissionError:
        return True
    return False


def address_space():
    """Bytes of address space this process uses now (VmSize)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')


def set_limits(limits):
    """CPU, address space, file, process and core limits; True when all were set."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(usage.ru_utime + usage.ru_stime + limits['cpu_s'])
    memory = address_space() + limits['memory_mb'] * 2**20
    wanted = (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, memory, memory),
        (resource.RLIMIT_FSIZE, 0, 0),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NPROC, 0, 0),
        (resource.RLIMIT_NOFILE, 3, 3),  # stdin, stdout, stderr: nothing new can be opened
    )
    ok = True
    for which, soft, hard in wanted:
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError):
            ok = False
    return ok


def describe(error):
    """'Type: message (line n)' with the line of the model's code where it was raised."""
    line = None
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == CODE_FILENAME:
            line = frame.tb_lineno
        frame = frame.tb_next
    text = f'{type(error).__name__}: {error}' if str(error) else type(error).__name__
    text += f' (line {line})' if line else ''
    return text[:MAX_MESSAGE]


def run(code, keypoints, np):
    """{'result': value} of get_interaction_data(keypoints), or {'error': {'kind', 'message'}}."""
    namespace = {'__builtins__': {name: getattr(builtins, name) for name in SAFE_BUILTINS}, 'np': numpy_proxy(np)}
    try:
        compiled = compile(code, CODE_FILENAME, 'exec')
    except (SyntaxError, ValueError, RecursionError) as error:  # RecursionError: nested too deeply
        return {'error': {'kind': 'syntax', 'message': describe(error)}}
    try:
        exec(compiled, namespace)
        return {'result': namespace[FUNCTION](keypoints)}
    except MemoryError as error:
        return {'error': {'kind': 'memory', 'message': describe(error)}}
    except Exception as error:
        return {'error': {'kind': 'runtime', 'message': describe(error)}}


def plain(value):
    """JSON for numpy values (arrays as lists, scalars as numbers); anything else is refused."""
    if hasattr(value, 'tolist') and type(value).__module__ == 'numpy':
        return value.tolist()
    raise TypeError(f'a {type(value).__name__} is not JSON data')


def encode(reply, max_bytes):
    """The reply as JSON, or an error reply when the result is not JSON data or too large."""
    try:
        text = json.dumps(reply, default=plain)
    except MemoryError:
        kind, message = 'memory', 'the result is too large to encode'
    except (TypeError, ValueError, RecursionError) as error:  # ValueError: a circular reference
        kind, message = 'output', f'the result is not JSON data: {error}'[:MAX_MESSAGE]
    else:
        if len(text) <= max_bytes:
            return text
        kind, message = 'output', f'the result is {len(text)} bytes of JSON, more than the {max_bytes} allowed'
    return json.dumps({'error': {'kind': kind, 'message': message}, 'layers': reply['layers']})


def main():
    """Read the request, contain this process, run the code, write the reply."""
    request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
    layers = {'empty_env': set(os.environ) <= PYTHON_SETS}
    os.environ.update({'OPENBLAS_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'})
    sys.path[:0] = request['paths']
    import numpy as np

    try:
        import pyseccomp
    except Exception:  # not installed, or libseccomp missing
        pyseccomp = None
    np.seterr(divide='raise', over='raise', invalid='raise', under='ignore')
    keypoints = np.array(request['keypoints'], dtype=float).reshape(-1, 3)
    network = isolate_network()
    layers['unprivileged'] = drop_privileges()
    layers['seccomp'] = load_seccomp(pyseccomp)
    layers['no_network'] = network or ('seccomp' if layers['seccomp'] else False)
    os.environ.clear()
    sys.path.clear()
    layers['rlimits'] = set_limits(request['limits'])
    reply = run(request['code'], keypoints, np)
    reply['layers'] = layers
    sys.stdout.write(encode(reply, request['limits']['max_output_bytes']))
    sys.stdout.flush()


if __name__ == '__main__':
    main()
