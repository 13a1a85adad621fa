"""Working doubles of Chrono's peers: exchange simulators on real loopback WebSockets."""
