"""``Recorder``: how an engine reports each finished file (manifest first, then the caller).

Kept apart from ``runner`` so that the engines, which ``runner`` imports, can use it
without an import circle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from refacex.engines.manifest import Entry, Manifest, entry
from refacex.engines.tasks import Outcome, Task


class Recorder:
    """The engines' one way to report: updates the manifest, then tells the caller."""

    def __init__(self, manifest: Manifest, settings: str,
                 on_outcome: Callable[[Outcome], None]) -> None:
        self.manifest = manifest
        self.settings = settings
        self.on_outcome = on_outcome
        self.done = 0
        self.failed = 0
        self._entries: dict[int, Entry] = {}

    def entry(self, task: Task) -> Entry:
        key = id(task)
        if key not in self._entries:
            self._entries[key] = entry(task.kind, task.src, task.dest, task.private_name)
        return self._entries[key]

    def started(self, task: Task, worker: str = "") -> None:
        self.manifest.mark_running(self.entry(task), worker)

    def finished(self, outcome: Outcome) -> None:
        task = outcome.task
        e = self.entry(task)
        if outcome.ok:
            self.manifest.mark_done(e, self.settings, outcome.report, outcome.seconds,
                                    outcome.worker)
            self.done += 1
        else:
            if not task.dest.exists():  # nothing of a failed task stays behind
                for extra in task.extras:
                    with contextlib.suppress(OSError):
                        extra.unlink()
            error = outcome.error or "failed"
            if task.private_name is not None:  # --rename: no input names in the manifest
                error = error.replace(str(task.src), task.private_name)
            self.manifest.mark_failed(e, error, outcome.seconds, outcome.worker)
            self.failed += 1
        self.on_outcome(outcome)
