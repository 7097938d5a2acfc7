"""Fixtures of the twinloop_vla tests."""

import pytest
import torch

from twinloop_data.world_sim_expert import TASKS, TRAIN_SEED_MIN
from twinloop_vla.record import record


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and the CI machine's two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def demos(tmp_path_factory):
    """Four short recorded episodes with gaze masks (two per task, 10 frames each, 2 cameras of 56 x 42 px)."""
    out = tmp_path_factory.mktemp('data') / 'demos'
    record(out, list(TASKS), episodes=2, seed=TRAIN_SEED_MIN, size=(56, 42), max_frames=10, progress=False)
    return out
