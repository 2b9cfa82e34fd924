"""The Ray engine (``--engine ray [--address ADDR] [--workers N]``, the ``[ray]`` extra).

Shape: one actor per worker, each a ``tasks.Worker`` that loads the models once and keeps
them; the driver (this process) keeps every actor two files deep (one running, one
queued, so no actor waits on the driver), collects results as they arrive
(``ray.wait``), writes the outputs and records each in the manifest before it submits
more. So:

* images travel as bytes through Ray's object store (input there, output and sidecar
  back): workers need no shared disk, and only the driver writes into OUT, with the same
  atomic writer as the local engine, so the manifest and the folder cannot disagree;
* videos are tasks on paths: the worker reads the input and writes the output and
  sidecar itself, so on a multi-machine cluster they need a filesystem the driver and
  workers share (on one machine they always do); with ``Job.video_part_s`` a long video
  is cut at keyframes into parts, one task each, joined by the driver when all are back
  (``engines/videoparts.py``);
* a worker that dies (a crash, out of memory) fails the file(s) it held, is restarted by
  Ray, and the run goes on; ``--resume`` retries failed files;
* with no ``--address`` a private local cluster with ``--workers`` CPUs (default: all)
  is started and shut down with the run (also on SIGTERM / Ctrl-C); if the driver is
  SIGKILLed, Ray's raylet and GCS go with it at once, its agents within about a minute.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from refacex.engines.recorder import Recorder
from refacex.engines.tasks import Job, Outcome, Task, Worker
from refacex.engines.videoparts import Unit, VideoSplit
from refacex.errors import RefacexError
from refacex.io.images import write_bytes_atomic

#: Files each actor holds at once: one running, one waiting (its input already shipped).
DEPTH = 2
#: A crashed actor is restarted this often before its files fail for good.
MAX_RESTARTS = 3
#: The driver's wait for results returns this often to act on SIGTERM / Ctrl-C.
WAIT_S = 0.5


class RayMissingError(RefacexError):
    """``--engine ray`` without Ray installed."""


def require_ray() -> None:
    """Fail with one line, before any work, when Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise RayMissingError("--engine ray needs the [ray] extra: "
                              "pip install 'refacex[ray]'")


def _ray() -> Any:
    require_ray()
    try:
        import ray
    except ImportError as exc:  # installed but broken (a missing dependency)
        raise RayMissingError(f"--engine ray: Ray is installed but does not import ({exc}); "
                              "pip install 'refacex[ray]'") from None
    return ray


def connect(workers: int | None = None, address: str | None = None) -> bool:
    """Start a local cluster (``workers`` CPUs, default all) or join ``address``; True if
    this call started Ray (so the caller shuts it down)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
        _token_auth_when_joining()  # before Ray is imported: it reads the mode then
    ray = _ray()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False,
             "logging_level": logging.ERROR}
    # Ray's core installs C-level handlers for SIGTERM/SIGINT in the driver that dump a
    # "crash" report and exit 1; the caller's own handlers (the CLI: remove the partial
    # file, one line "terminated", exit 143) are put back after ray.init.
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # "local": a new private instance even when `ray start` left its address in
            # /tmp/ray (ray.init() would join that cluster, or fail on a dead one).
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, **quiet)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        where = f"join the Ray cluster at {address}" if address else "start a local Ray cluster"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RefacexError(f"--engine ray: cannot {where} ({type(exc).__name__}: {first})"
                           ) from None
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a cluster address nothing listens at: ``ray.init`` itself
    retries such an address for many minutes (measured: over ten with Ray 2.60)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RefacexError(f"--engine ray: nothing answers at {address} "
                           f"({exc.strerror or exc}); is the cluster's head running "
                           "(`ray start --head`)?") from None


def _token_auth_when_joining() -> None:
    """Send this machine's Ray token when joining a cluster, as ``ray.init`` does for a
    cluster it starts. Ray >= 2.5x enables token auth by default (the token in
    ``~/.ray/auth_token``), but a driver joining by address only sends it with
    ``RAY_AUTH_MODE=token`` (else: "InvalidAuthToken" for ~20 s, then a refusal).
    An explicit ``RAY_AUTH_MODE`` (e.g. ``disabled``) is left as it is. Must run before
    ``import ray``, which reads the mode once."""
    from pathlib import Path

    if "RAY_AUTH_MODE" in os.environ:
        return
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def _signals_between_waits() -> Iterator[Callable[[], None]]:
    """While the driver waits on Ray, SIGTERM and SIGINT only note themselves; the loop
    acts on them between waits through the handlers that were there before.

    Why: an exception raised by a Python signal handler inside Ray's blocking calls
    (``ray.wait``) comes out as ``SystemExit(1)`` from Ray's C++ core, so the CLI's
    SIGTERM handling (one line "terminated", exit 143) and Ctrl-C (exit 130) would be
    lost. Deferring also means an output being written is finished, never cut.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    sigs = (signal.SIGTERM, signal.SIGINT)
    before = {sig: signal.getsignal(sig) for sig in sigs}
    noted: list[int] = []

    def note(signum: int, frame: object) -> None:
        noted.append(signum)

    def restore() -> None:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)

    def check() -> None:
        if not noted:
            return
        sig = noted[0]
        restore()
        handler = before[sig]
        if callable(handler):
            handler(sig, None)
        if sig == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + sig)

    for sig in sigs:
        signal.signal(sig, note)
    try:
        yield check
    finally:
        restore()


def _write(task: Task, files: list[tuple[str, bytes]]) -> None:
    """Write what a worker sent back beside ``task.dest``, in the order given (sidecar
    first, as ``pipeline.save`` does), each atomically."""
    for name, data in files:
        write_bytes_atomic(task.dest.with_name(name), data)


def _failed_worker(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"worker failed ({type(exc).__name__}{': ' + first if first else ''}); "
            "--resume retries this file")


def run(todo: Sequence[Task], job: Job, rec: Recorder, workers: int | None = None,
        address: str | None = None) -> None:
    """Process ``todo`` on Ray actors, recording each file as its result arrives."""
    if not todo:
        return
    started = connect(workers, address)  # first: it may set RAY_AUTH_MODE before the import
    ray = _ray()
    splits: set[VideoSplit] = set()  # videos being done in parts
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if not (job.video_part_s and any(t.kind == "video" for t in todo)):
            n = max(1, min(n, len(todo)))  # (parts of videos may keep them all busy)
        remote = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=0)(Worker)
        actors = [remote.remote(job, 1) for _ in range(n)]
        queue: deque[Task | Unit] = deque(todo)
        in_flight: dict[Any, tuple[Any, Task | Unit]] = {}

        def collect(ref: Any) -> None:
            """Write what came back and record it; then give that actor its next file."""
            actor, item = in_flight.pop(ref)
            try:
                res = ray.get(ref)
            except ray.exceptions.RayError as exc:
                res = {"error": _failed_worker(exc), "worker": "ray"}
            if isinstance(item, Unit):  # a part of a video: the video is done when all are
                split = item.split
                queue.extendleft(reversed(split.done(item, res)))
                if split.finished:
                    splits.discard(split)
                    rec.finished(split.finish(str(res.get("worker", "ray"))))
                feed()  # re-runs of parts may have been queued: to every idle actor
                return
            files = res.pop("files", None) or []
            if res.get("error") is None and files:
                try:
                    _write(item, files)
                except RefacexError as exc:
                    res["error"], res["report"] = str(exc), None
            rec.finished(Outcome(item, **res))
            submit(actor)

        def split(task: Task) -> bool:
            """Cut a long video into parts queued first; False: it runs whole."""
            try:
                parts = VideoSplit.start(task, job.video_part_s, n)
            except RefacexError as exc:
                rec.started(task, "driver")
                rec.finished(Outcome(task, error=str(exc), worker="driver"))
                return True
            if parts is None:
                return False
            rec.started(task, "ray")
            splits.add(parts)
            queue.extendleft(reversed(parts.units()))
            return True

        def submit(actor: Any) -> None:
            """Ship the next file to ``actor`` (an unreadable one is recorded failed here)."""
            while queue:
                task = queue.popleft()
                if isinstance(task, Unit):
                    ref = actor.video.remote(str(task.src), str(task.dest), task.hints)
                elif task.kind == "image":
                    try:
                        data = task.src.read_bytes()
                    except OSError as exc:
                        why = "no such file" if isinstance(exc, FileNotFoundError) else (
                            f"cannot read ({exc.strerror or exc})")
                        rec.started(task, "driver")
                        rec.finished(Outcome(task, error=f"{task.src}: {why}",
                                             worker="driver"))
                        continue
                    ref = actor.image.remote(str(task.src), str(task.dest), data)
                elif job.video_part_s and split(task):
                    continue
                else:
                    ref = actor.video.remote(str(task.src), str(task.dest))
                if not isinstance(task, Unit):
                    rec.started(task, "ray")
                in_flight[ref] = (actor, task)
                return

        def feed() -> None:
            """Give every actor work up to ``DEPTH`` items in flight."""
            for _ in range(DEPTH):
                for actor in actors:
                    if queue and sum(a is actor for a, _ in in_flight.values()) < DEPTH:
                        submit(actor)

        feed()
        with _signals_between_waits() as check_signals:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=WAIT_S)
                check_signals()
                if ready:
                    collect(ready[0])
    finally:
        for parts in splits:
            parts.discard()  # interrupted before it was joined: its parts' folder goes
        if started:
            ray.shutdown()
