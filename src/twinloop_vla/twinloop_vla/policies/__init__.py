"""The policy registry (LeRobot's shape) and the registered policies.

`make_policy(name, config)` builds a fresh policy by name, `load_policy(directory)` restores a
checkpoint written by `Policy.save`, `POLICIES` lists what is registered. Each policy lives in
configuration_<name>.py (a checked dataclass), modeling_<name>.py (the torch module, registered
with `@register_policy('<name>')`) and, where it has one, processor_<name>.py. Importing this
package registers 'vga', 'reconvla' and 'external'.
"""

from twinloop_vla.policies import modeling_external, modeling_reconvla, modeling_vga
from twinloop_vla.policies.base import (
    POLICIES,
    Policy,
    PolicyConfig,
    PolicyError,
    load_policy,
    make_policy,
    policy_class,
    register_policy,
)

__all__ = [
    'POLICIES',
    'Policy',
    'PolicyConfig',
    'PolicyError',
    'load_policy',
    'make_policy',
    'modeling_external',
    'modeling_reconvla',
    'modeling_vga',
    'policy_class',
    'register_policy',
]
