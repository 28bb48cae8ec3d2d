"""Load reports: attached to every reply and published on a ZMQ PUB socket.

    DynamicBatcher (depth, service ms, queue ms) ──► LoadReport ──► reply.load
                                                               └──► ZMQ PUB every interval:
                                                                    b"load " + JSON
                                                                    (a supervised thread)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import zmq
from splitnet_proto.messages import LoadReport

from edge_server.batching import DynamicBatcher
from splitnet import faults
from splitnet.supervision import Stopped, Supervisor

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
        self._batcher = batcher
        self._model_ids = list(model_ids)
        self._interval_s = interval_s
        self._socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(address)
        self.address: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Lock()  # a replaced (stalled) round must not share the socket
        self.supervisor = Supervisor(self._failed)
        self.supervisor.start("load publisher", self._round, stall_s=max(10 * interval_s, 1.0))

    def _round(self, beat: Callable[[], None]) -> None:
        if self.supervisor.stop_event.wait(self._interval_s):
            raise Stopped
        faults.point("edge.publisher")
        report: dict[str, Any] = asdict(load_report(self._batcher))
        report["model_ids"] = self._model_ids
        with self._lock:
            self._socket.send(LOAD_TOPIC + b" " + json.dumps(report).encode(), zmq.NOBLOCK)

    def _failed(self, name: str, reason: str) -> None:
        """A feed that stalled or keeps crashing is started afresh: it only informs."""
        if not self.supervisor.stop_event.wait(1.0):
            self.supervisor.replace(name)

    def close(self) -> None:
        self.supervisor.stop(join_s=2)
        with self._lock:
            self._socket.close()
