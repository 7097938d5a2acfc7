"""twinloop_iker: the IKER engine's ROS-free parts (shared/seeds/002): the sandbox for model-written
keypoint code, the keypoint reward and the engine configuration."""
