"""``run_tasks``: resume from the manifest, hand the rest to an engine, record each outcome.

The order that makes a killed run safe to rerun, whatever the engine:

1. the output is written atomically (temp file + rename; a sidecar before its image);
2. only then is the row marked done (one committed transaction);
3. a rerun with ``--resume`` skips rows that are done for the same input (size, mtime),
   settings and output and whose output still verifies, and redoes everything else; a
   row left "running" by a killed run is simply redone;
4. when no other run into the folder is alive, temp files over a minute old are from a
   dead run and are deleted (a fresh one may belong to a writer that keeps no manifest);
5. a task that fails and leaves no main output also leaves no sidecar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from refacex.engines.manifest import Manifest
from refacex.engines.recorder import Recorder
from refacex.engines.tasks import Job, Outcome, Task
from refacex.errors import RefacexError

ENGINES = ("local", "ray")


def run_tasks(tasks: Sequence[Task], job: Job, outdir: Path, *,
              on_outcome: Callable[[Outcome], None], command: str = "anonymize",
              engine: str = "local", workers: int | None = None, address: str | None = None,
              resume: bool = False, already_done: Callable[[Task], bool] | None = None,
              on_cleanup: Callable[[int], None] | None = None) -> dict[str, int]:
    """Process ``tasks`` (outputs planned and OUT prepared by the caller) with ``engine``.

    ``resume``: skip what the manifest says is done; for inputs it has no row of (outputs
    from before manifests), ``already_done(task)`` decides. ``on_outcome`` is called once
    per task, skipped ones included, in completion order. ``on_cleanup(n)`` hears how many
    temp files of dead runs were deleted. Returns counts: done, failed, skipped.
    """
    from refacex.io.images import clean_stale_temp

    if engine not in ENGINES:
        raise RefacexError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "ray":
        from refacex.engines.ray import require_ray

        require_ray()  # before anything is written
    with Manifest.beside(outdir, command) as manifest:
        manifest.start_run(engine, workers)
        if not manifest.others_running():
            # Only temp files over a minute old: a writer that keeps no manifest (an
            # older refacex, another tool's copy) may still own a fresh one.
            removed = clean_stale_temp(Path(outdir), older_than_s=60)
            if removed and on_cleanup is not None:
                on_cleanup(removed)
        settings = job.digest()
        rec = Recorder(manifest, settings, on_outcome)
        todo: list[Task] = []
        skipped = 0
        for task in tasks:
            e = rec.entry(task)
            # Done per the manifest AND its output still verifies: an output damaged or
            # cut off after the run (a partial copy) is redone.
            if resume and (manifest.is_done(e, settings) or (
                    not manifest.known(e) and already_done is not None)) and (
                    already_done is None or already_done(task)):
                if not manifest.known(e):  # an output from before manifests: adopt it
                    manifest.mark_done(e, settings, None, 0.0, "resume")
                skipped += 1
                on_outcome(Outcome(task, skipped=True))
                continue
            todo.append(task)
        manifest.mark_pending([rec.entry(t) for t in todo], settings)
        if engine == "ray":
            from refacex.engines import ray as ray_engine

            ray_engine.run(todo, job, rec, workers=workers, address=address)
        else:
            from refacex.engines import local

            local.run(todo, job, rec)
        manifest.finish_run(len(todo), rec.failed)
    return {"done": rec.done, "failed": rec.failed, "skipped": skipped}
