"""The local engine: every file in this process, one after another.

The default: no cluster to start (Ray takes seconds to start and a worker per CPU loads
its own copy of the models, ~0.5 GB each), and the models' own thread pools (OpenCV) use
the machine's cores within one file.
"""

from __future__ import annotations

from collections.abc import Sequence

from refacex.engines.recorder import Recorder
from refacex.engines.tasks import Job, Outcome, Task, Worker


def run(todo: Sequence[Task], job: Job, rec: Recorder) -> None:
    """Process ``todo`` in order. Ctrl-C or SIGTERM stops at once (the file being written
    removes its temp file); its row stays "running" and the next ``--resume`` redoes it."""
    worker = Worker(job)
    for task in todo:
        rec.started(task, worker.name)
        if task.kind == "image":
            res = worker.image(str(task.src), str(task.dest))
        else:
            res = worker.video(str(task.src), str(task.dest))
        rec.finished(Outcome(task, **res))
