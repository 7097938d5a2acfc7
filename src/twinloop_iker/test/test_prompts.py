"""config/iker_prompts.yaml agrees with the sandbox: every placeholder is filled, the answer format
passes the static check, and the return dict it shows has exactly the keys the output check reads."""

import ast
import os
import re
from pathlib import Path

import pytest
import yaml

from twinloop_iker import sandbox
from twinloop_iker.sandbox_child import SAFE_BUILTINS

PROMPTS = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config' / 'iker_prompts.yaml'


def render(prompts, name):
    rules = prompts['rules'].format(
        numpy_names=', '.join(f'np.{n}' for n in sandbox.NUMPY_NAMES),
        builtin_names=', '.join(SAFE_BUILTINS),
        value_attributes=', '.join(sorted(sandbox.VALUE_ATTRIBUTES)),
    )
    history = prompts['history_entry'].format(stage=1, image=1, code='...', outcome='the box moved 3 cm')
    return prompts[name].format(
        axes=prompts['axes'],
        rules=rules,
        object_list='- box\n- tray',
        instruction='put the box on the tray',
        history=history,
    )


@pytest.mark.parametrize('name', ['single_step', 'multi_step'])
def test_prompt_renders_and_its_answer_format_passes_the_sandbox(name):
    with open(PROMPTS) as f:
        prompts = yaml.safe_load(f)
    assert isinstance(prompts['version'], int)
    text = render(prompts, name)
    assert not re.search(r'\{[a-z_]+\}', text), 'a placeholder is left'
    assert 'put the box on the tray' in text and '- tray' in text and 'np.linalg.norm' in text
    code = re.search(r'```python\n(.*?)```', text, re.S).group(1)
    tree = sandbox.check_code(code)
    returned = [n.value for n in ast.walk(tree) if isinstance(n, ast.Return) and isinstance(n.value, ast.Dict)]
    keys = {k.value for d in returned for k in d.keys}
    assert set(sandbox.INTERACTION_KEYS) | {'done'} <= keys <= set(sandbox.INTERACTION_KEYS + sandbox.OPTIONAL_KEYS)
