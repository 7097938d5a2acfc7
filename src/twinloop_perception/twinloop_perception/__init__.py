"""Perception: 6D pose estimation of known objects from RGB-D, and keypoint proposal."""
