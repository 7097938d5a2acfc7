"""twinloop_iker: the IKER engine's ROS-free parts (shared/seeds/002): the sandbox for model-written
keypoint code, the keypoint reward, the engine configuration, and the policies in the twin (the
training env, the CEM planner, PPO training and evaluation)."""
