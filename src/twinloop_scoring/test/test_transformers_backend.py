"""A local transformers VLM, when a model directory is configured (TWINLOOP_VLM_DIR); skipped otherwise."""

import os

import numpy as np
import pytest

MODEL_DIR = os.environ.get('TWINLOOP_VLM_DIR', '')


@pytest.mark.skipif(
    not MODEL_DIR,
    reason='no local VLM: set TWINLOOP_VLM_DIR to a transformers checkpoint directory '
    '(e.g. SmolVLM or Qwen2.5-VL); none can be downloaded on this machine',
)
def test_local_vlm_answers_about_an_image():
    from twinloop_scoring.transformers_backend import TransformersBackend
    from twinloop_scoring.vlm import VLMReply, VLMRequest

    backend = TransformersBackend(MODEL_DIR, max_new_tokens=32)
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :, 0] = 255
    reply = backend.complete([VLMRequest('What colour is this image? Answer with one word.', [image])])[0]
    assert isinstance(reply, VLMReply) and 'red' in reply.text.lower()
