"""``/stream``'s core, apart from the WebSocket: the hub (``hub``), each client's queue and
throttles (``client``), the replay ring (``ring``), the messages (``messages``) and the consensus
and status channels' watchers (``watch``). ``chrono.api.stream`` is the WebSocket side."""

from chrono.stream.client import CHANNELS, CONSENSUS, PRICES, STATUS, StreamClient, Throttle
from chrono.stream.hub import ChannelValue, StreamHub, StreamStatistics, Subscribed

__all__ = [
    "CHANNELS",
    "CONSENSUS",
    "PRICES",
    "STATUS",
    "ChannelValue",
    "StreamClient",
    "StreamHub",
    "StreamStatistics",
    "Subscribed",
    "Throttle",
]
