"""The reference MES side of edge-inspect's ZeroMQ outputs.

- `receiver.MesReceiver` + `store.ResultStore`: acknowledged delivery target that stores every result
  exactly once (SQLite) and acknowledges only what it committed (`edge-inspect mes listen`).
- `client.StreamClient`: a live-stream subscriber with snapshot/replay catch-up (no gap, no duplicate).
"""

from mes.client import StreamClient, StreamEvent
from mes.receiver import MesReceiver
from mes.store import ResultStore

__all__ = ["MesReceiver", "ResultStore", "StreamClient", "StreamEvent"]
