"""twinloop_vla: learned policies (VLA) served behind RunPolicy.

`twinloop_vla.policies` holds the registry (`make_policy`, `load_policy`) and one
configuration_/modeling_/processor_ module per policy (LeRobot's layout): VGA (the
vision-geometry-action model of shared/seeds/003) and `external` (an OpenVLA-style HTTP policy
server). `encoders` holds the patch encoders, `text` the instruction embedder, `layers` the
transformer blocks. Nothing here imports ROS; the policy node comes on top.
"""
