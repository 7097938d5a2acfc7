"""The style gate: ruff's lint (pyflakes, pycodestyle at 120 columns, docstrings on public names)
and its formatter agree with every Python file (configuration: ruff.toml)."""

import os
import subprocess
import sys

ROOT = os.environ['TWINLOOP_ROOT']


def _ruff(*args):
    return subprocess.run([sys.executable, '-m', 'ruff', *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check_passes():
    result = _ruff('check', '--no-cache', '--output-format', 'concise', '.')
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_check_passes():
    result = _ruff('format', '--no-cache', '--check', '.')
    assert result.returncode == 0, result.stdout + result.stderr
