"""Decode ahead and encode behind the anonymiser, each in its own thread.

Why threads and not processes: FFmpeg (PyAV) releases the GIL while it decodes, converts
and encodes, and so does OpenCV in ``imencode`` (the vault's PNGs), so a decoder thread
and an encoder thread overlap with the anonymiser's own work on a second core without
copying frames between processes. The queues are bounded: memory stays at a few frames
however long the video, and a slow stage slows the others instead of piling up frames.

Both helpers re-raise a worker's exception in the calling thread (the run fails as it
would single-threaded: one error, no output) and stop their thread on ``close``, also
when the caller leaves early (an error of its own, Ctrl-C).
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.1  # how often a blocked worker looks at the stop flag


class Prefetch(Generic[T]):
    """Iterate ``source`` in a background thread, ``depth`` items ahead of the consumer."""

    def __init__(self, source: Iterable[T], depth: int = 8) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(iter(source),),
                                        name="refacex-decode", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator[T]) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's own cleanup runs here, not in a later GC
        self._put(_END)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._q.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        """Stop the producer (it may be blocked on a full queue) and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sink:
    """Call ``consume(item)`` for each ``put`` item, in order, in a background thread."""

    def __init__(self, consume: Callable[[Any], None], depth: int = 8) -> None:
        self._consume = consume
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="refacex-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _END:
                return
            if self._error is not None:
                continue  # drain after a failure; the caller learns of it on its next put
            try:
                self._consume(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        """Queue ``item`` (blocks while ``depth`` items wait); raises a consumer error."""
        self._raise()
        while True:
            try:
                self._q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                self._raise()
                if not self._thread.is_alive():
                    raise RuntimeError("encoder thread stopped") from None

    def finish(self) -> None:
        """Wait until every queued item is consumed; raises a consumer error."""
        self._q.put(_END)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Stop without consuming what is still queued (the run failed)."""
        self._stop.set()
        self._error = self._error or RuntimeError("aborted")
        self._thread.join()


class PriorityWorker:
    """One background thread running submitted calls, lowest ``priority`` first (FIFO
    within a priority); ``submit`` returns a ``Future``. The real-time engine's keyframe
    worker: a new face's first swap must not wait behind other faces' refreshes."""

    def __init__(self, name: str = "refacex-worker") -> None:
        self._heap: list[tuple[int, int, Future, Callable[..., Any], tuple]] = []
        self._cv = threading.Condition()
        self._seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("worker is closed")
            heapq.heappush(self._heap, (priority, self._seq, fut, fn, args))
            self._seq += 1
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if not self._heap:
                    return
                _, _, fut, fn, args = heapq.heappop(self._heap)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's Future
                fut.set_exception(exc)

    def close(self) -> None:
        """Cancel what has not started, wait for what runs."""
        with self._cv:
            self._closed = True
            for _, _, fut, _, _ in self._heap:
                fut.cancel()
            self._heap.clear()
            self._cv.notify()
        self._thread.join()
