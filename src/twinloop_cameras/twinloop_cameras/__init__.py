"""twinloop cameras: Intel RealSense colour + aligned depth as ROS 2 camera topics."""
