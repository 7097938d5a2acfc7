"""twinloop_ros: topics, QoS, message conversions, the message codec and the main() every twinloop
node shares."""
