"""The dataset viewer: one HTML page with every episode's language, embedded frames (the gaze region
tinted) and action plot."""

import base64
import io
import re

import numpy as np
from PIL import Image

from twinloop_data.lerobot_format import LeRobotWriter
from twinloop_vla.viewer import main

FEATURES = {
    'observation.images.front': {'dtype': 'image', 'shape': [12, 16, 3], 'names': ['height', 'width', 'channel']},
    'observation.images.wrist': {'dtype': 'image', 'shape': [12, 16, 3], 'names': ['height', 'width', 'channel']},
    'observation.gaze.front': {'dtype': 'image', 'shape': [12, 16, 1], 'names': ['height', 'width', 'channel']},
    'observation.state': {'dtype': 'float32', 'shape': [2], 'names': ['a', 'b']},
    'action': {'dtype': 'float32', 'shape': [2], 'names': ['a_target', 'b_target']},
}
TASKS = ['pick up the blue cube', 'put the red cube in the bowl', 'pick up the blue cube']


def colour(episode, frame, camera):
    """A solid image that says which episode, frame and camera it is."""
    return np.full((12, 16, 3), (40 * episode, 20 * frame, 100 * camera), np.uint8)


def gaze_mask():
    """The front camera's gaze region: the left half."""
    mask = np.zeros((12, 16), np.uint8)
    mask[:, :8] = 255
    return mask


def decode(uri):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert('RGB'))


def test_page_shows_each_episode_with_language_frames_and_actions(tmp_path):
    writer = LeRobotWriter(tmp_path / 'demos', fps=10, features=FEATURES)
    for episode, task in enumerate(TASKS):
        for frame in range(6 + episode):
            writer.add_frame(
                {
                    'observation.images.front': colour(episode, frame, 0),
                    'observation.images.wrist': colour(episode, frame, 1),
                    'observation.gaze.front': gaze_mask(),
                    'observation.state': [frame, -frame],
                    'action': [frame + 1, -frame - 1],
                }
            )
        writer.save_episode(task)
    page = tmp_path / 'page.html'
    main([str(tmp_path / 'demos'), '--out', str(page), '--frames', '3'])
    text = page.read_text()

    sections = re.findall(r'<section class="episode" id="episode-(\d+)">(.*?)</section>', text, re.S)
    assert [int(index) for index, _ in sections] == [0, 1, 2]
    for (index, body), task in zip(sections, TASKS):
        episode = int(index)
        assert re.search(r'class="language">([^<]*)<', body).group(1) == task
        shown = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="(front|wrist) frame (\d+)"', body)
        for camera in ('front', 'wrist'):
            frames = [int(frame) for _, cam, frame in shown if cam == camera]
            assert len(frames) == 3 and frames[0] == 0 and frames[-1] == 5 + episode and frames == sorted(set(frames))
        for uri, camera, frame in shown:
            expected = colour(episode, int(frame), ('front', 'wrist').index(camera))
            if camera == 'front':  # the gaze region half-way to yellow, the rest as recorded
                expected[:, :8] = (0.5 * expected[:, :8] + 0.5 * np.array([255.0, 220.0, 0.0])).astype(np.uint8)
            assert np.array_equal(decode(uri), expected)
        plot = re.search(r'<img class="plot" src="data:image/png;base64,([^"]+)"', body).group(1)
        assert decode(plot).shape[0] > 100  # a real matplotlib figure, not an empty image
