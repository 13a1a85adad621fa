"""Memory channels in place of a broker: fan-out, batcher, latest prices, stream hub.

Buffer sizes are chosen for their backpressure: the store path blocks (nothing dropped, the
collectors slow down); the latest-price update and the stream hub never block.
"""
