"""The decision-log writer: JSON lines appended off the request path, bounded in memory and on disk.

``write`` runs in the learn step, after the response has been sent: it only puts the record on a
bounded queue (``max_pending`` records; when the file cannot keep up, further records are dropped
and counted in ``autoscale_decision_log_records_total{outcome="dropped"}`` rather than held).
A ``logging.handlers.QueueListener`` thread serialises each record and hands it to a
``RotatingFileHandler``: when the file would grow past ``max_bytes`` it is renamed ``FILE.1`` (the
previous ``FILE.1`` becomes ``FILE.2``, ...) and only ``backups`` of them are kept, so the log uses
at most ``(backups + 1) x max_bytes`` of disk. Replay the rotated files oldest first.
"""

from __future__ import annotations

import logging
import queue
from logging.handlers import QueueListener, RotatingFileHandler
from pathlib import Path

from services.core.decision_log import DecisionRecord
from services.decider.metrics import decider_metrics

MAX_PENDING = 10_000  # records waiting for the writer thread (a few MB at most)


class _Line:
    """A record's JSON, serialised once, in the writer thread, when the handler first formats it
    (the rotating handler formats twice: to size the line, then to write it)."""

    __slots__ = ("_json", "record")

    def __init__(self, record: DecisionRecord) -> None:
        self.record = record
        self._json: str | None = None

    def __str__(self) -> str:
        if self._json is None:
            self._json = self.record.model_dump_json()
        return self._json


class DecisionLog:
    """Appends ``DecisionRecord``s to ``path`` as JSON lines (see the module docstring)."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int, max_pending: int = MAX_PENDING) -> None:
        if backups < 1:
            raise ValueError("backups must be >= 1: with none, RotatingFileHandler never rotates")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(max_pending)
        self._handler = RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._listener = QueueListener(self._queue, self._handler)
        self.queued = self.dropped = 0

    def start(self) -> None:
        self._listener.start()

    def write(self, record: DecisionRecord) -> None:
        """Queue one record; never blocks (a full queue drops it and counts the drop)."""
        entry = logging.LogRecord("autoscale.decisions", logging.INFO, __file__, 0, _Line(record), None, None)
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            decider_metrics.decision_logged("dropped")
            return
        self.queued += 1
        decider_metrics.decision_logged("queued")

    def stop(self) -> None:
        """Write what is queued, then close the file (blocks until the writer thread is done)."""
        self._listener.stop()
        self._handler.close()
