"""twinloop_ros: topics, QoS, message conversions and the main() every twinloop node shares."""
