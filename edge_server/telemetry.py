"""Load reports: attached to every reply and published on a ZMQ PUB socket.

    DynamicBatcher (depth, service ms, queue ms) ──► LoadReport ──► reply.load
                                                               └──► ZMQ PUB every interval:
                                                                    b"load " + JSON
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from typing import Any

from edge_server.batching import DynamicBatcher
from splitnet.messages import LoadReport

LOAD_TOPIC = b"load"


def load_report(batcher: DynamicBatcher[Any, Any]) -> LoadReport:
    """The batcher's current load."""
    return LoadReport(queue_depth=batcher.depth, service_ms=batcher.recent_service_ms,
                      queue_ms_recent=batcher.recent_queue_ms,
                      max_batch_size=batcher.max_batch_size)


class LoadPublisher:
    """Publishes the load as ``load {json}`` on a ZMQ PUB socket until closed."""

    def __init__(self, batcher: DynamicBatcher[Any, Any], address: str,
                 model_ids: tuple[str, ...],
                 interval_s: float = 0.5) -> None:
        import zmq

        self._batcher = batcher
        self._model_ids = list(model_ids)
        self._interval_s = interval_s
        self._socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(address)
        self.address: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="load-pub", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            report: dict[str, Any] = asdict(load_report(self._batcher))
            report["model_ids"] = self._model_ids
            self._socket.send(LOAD_TOPIC + b" " + json.dumps(report).encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()
