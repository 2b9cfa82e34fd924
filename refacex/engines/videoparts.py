"""A long video as several tasks: cut at keyframes, parts anonymised apart, joined back.

Why: a video is otherwise one task, and one worker does all of it while the others
wait. ``VideoSplit`` cuts it (``io/videoparts.py``: remux, no re-encoding), hands out one
unit per part (``Worker.video`` on the part), and joins the anonymised parts and their
vaults into the output once all are back.

One person, one donor, across the cuts: each part chooses donors for its own tracks,
so a person on screen across a cut could get another donor in the next part (a visible
identity jump at the cut). When all parts are back, each track that starts at a part's
first frames is linked to the track of the part before that ends at its last frame where
the face is (IoU of the boxes across the cut); a chain of linked tracks keeps the donor
of its first part. A part in which a linked track chose another donor is done again with
that donor given (``donor_hints``; checked at the track's first keyframe like every
later keyframe of a track: blurred, never left, where it is not private). These re-runs
are known from the first round alone (a chain's donor is its first track's, which no
hint changes), so they run in parallel too, and at most once per part.

What differs from a whole-file run (``docs/scaling.md``): a track's donor is chosen on
its first keyframe in the first part it appears in, as a whole-file run does; but a face
that appears in the last few frames before a cut is blurred there (too short a track in
that part) and swapped from the cut on; and a person who leaves and comes back in a
later part is re-identified only within a part.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refacex.engines.tasks import Outcome, Task, failure_text
from refacex.errors import OutputError
from refacex.io.images import TEMP_SUFFIX
from refacex.io.videoparts import Part, cut_parts, join_parts, plan_parts
from refacex.video.anonymize import LINK_IOU

#: ``--video-part-s`` by default: parts long enough that the cuts are few (each one
#: costs a worker's model warm-up and, at most, a re-run of the part), short enough that
#: a few minutes of video keep a handful of workers busy.
DEFAULT_PART_S = 30.0


@dataclass
class Unit:
    """One part of a split video, for a worker: ``Worker.video(src, dest, hints)``."""

    split: VideoSplit
    part: int
    src: Path
    dest: Path
    hints: list[dict] | None = None


def link_tracks(before: list[dict], frames_before: int, after: list[dict]
                ) -> dict[int, int]:
    """Which track of a part (``after``, by position) continues which track of the part
    before it (``before``, ``frames_before`` frames long): the track edited at the
    earlier part's last frame whose box overlaps most, greedily, at ``LINK_IOU``."""
    from refacex.faces.detect import iou

    ends = [i for i, t in enumerate(before)
            if t["edited"] and t["edited"][1] == frames_before - 1]
    pairs = []
    for j, t in enumerate(after):
        if not t["edited"] or t["edited"][0] > 1:
            continue
        for i in ends:
            o = iou(np.asarray(before[i]["last_box"], float), np.asarray(t["first_box"], float))
            if o >= LINK_IOU:
                pairs.append((o, i, j))
    links: dict[int, int] = {}
    used: set[int] = set()
    for _o, i, j in sorted(pairs, reverse=True):
        if j not in links and i not in used:
            links[j] = i
            used.add(i)
    return links


def people(tracks: list[list[dict]], frames: list[int]) -> list[list[int]]:
    """Per part, per track: the person it is (0, 1, ...), the same for tracks linked
    across the cuts (``link_tracks``)."""
    out: list[list[int]] = []
    count = 0
    for k, part in enumerate(tracks):
        links = link_tracks(tracks[k - 1], frames[k - 1], part) if k else {}
        mine = []
        for j in range(len(part)):
            if j in links:
                mine.append(out[k - 1][links[j]])
            else:
                mine.append(count)
                count += 1
        out.append(mine)
    return out


def seam_hints(tracks: list[list[dict]], frames: list[int]) -> dict[int, list[dict]]:
    """The donor hints of each part (by index) whose tracks chose a donor other than
    their person's: that of the person's first track (in frame order) with one."""
    donor: dict[int, tuple[str, dict]] = {}
    hints: dict[int, list[dict]] = {}
    for k, (part, who) in enumerate(zip(tracks, people(tracks, frames), strict=True)):
        for t, p in zip(part, who, strict=True):
            if not t["donors"]:
                continue
            first = donor.setdefault(p, (t["donors"][0], dict(t["overrides"] or {})))
            if first[0] != t["donors"][0]:
                hints.setdefault(k, []).append({"box": list(t["first_box"]),
                                                "donor": first[0], "overrides": first[1]})
    return hints


@dataclass(eq=False)
class VideoSplit:
    """One video task being done in parts (see the module's docstring)."""

    task: Task
    parts: list[Part]
    folder: Path
    inputs: list[Path]
    started: float = field(default_factory=time.perf_counter)
    results: dict[int, dict] = field(default_factory=dict)
    linked: bool = False  # the seams were looked at (after the first round)
    reruns: set[int] = field(default_factory=set)  # parts done again for a seam
    waiting: set[int] = field(default_factory=set)
    error: str | None = None
    seconds: float = 0.0  # worker time, all units together

    @classmethod
    def start(cls, task: Task, part_s: float, max_parts: int) -> VideoSplit | None:
        """Cut ``task``'s video into a hidden folder beside its output; None when it has
        fewer than two parts (run it whole)."""
        if part_s <= 0 or max_parts < 2:
            return None
        parts = plan_parts(task.src, part_s, max_parts)
        if len(parts) < 2:
            return None
        task.dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder = Path(tempfile.mkdtemp(dir=task.dest.parent, prefix=f".{task.dest.name}.",
                                           suffix=".parts" + TEMP_SUFFIX))
        except OSError as exc:
            raise OutputError(f"{task.dest.parent}: cannot write here "
                              f"({exc.strerror or exc})") from None
        try:
            inputs = cut_parts(task.src, parts, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(task, parts, folder, inputs)

    def discard(self) -> None:
        """Remove the parts' folder (a run interrupted before the video was joined)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _dest(self, k: int) -> Path:
        return self.folder / f"out{k:04d}{self.inputs[k].suffix}"

    def units(self) -> list[Unit]:
        """The first round: every part as it is."""
        self.waiting = set(range(len(self.parts)))
        return [Unit(self, k, self.inputs[k], self._dest(k)) for k in range(len(self.parts))]

    def done(self, unit: Unit, result: dict) -> list[Unit]:
        """Take a unit's result; returns the units to run next (re-runs with hints)."""
        self.waiting.discard(unit.part)
        self.seconds += float(result.get("seconds") or 0.0)
        if result.get("error") is not None:
            self.error = self.error or f"part {unit.part + 1}/{len(self.parts)}: " \
                                       f"{result['error']}"
        else:
            self.results[unit.part] = result["report"]
        if self.waiting or self.error is not None or self.linked:
            return []
        got = [int(self.results[k]["frames"]) for k in range(len(self.parts))]
        if got != [p.frames for p in self.parts]:
            self.error = (f"its parts decoded to {sum(got)} frames, not "
                          f"{sum(p.frames for p in self.parts)} (keyframes that do not "
                          "open closed groups of pictures?); run it whole "
                          "(--video-part-s 0)")
            return []
        hints = seam_hints([self.results[k]["tracks"] for k in range(len(self.parts))], got)
        self.linked, self.reruns, self.waiting = True, set(hints), set(hints)
        return [Unit(self, k, self.inputs[k], self._dest(k), h) for k, h in hints.items()]

    @property
    def finished(self) -> bool:
        return not self.waiting and (self.error is not None or self.linked)

    def finish(self, worker: str) -> Outcome:
        """Join the parts and their vaults into the task's output (vault first, then the
        video, each renamed into place); the parts' folder goes either way."""
        try:
            if self.error is not None:
                return Outcome(self.task, error=f"{self.task.src}: {self.error}",
                               seconds=self.seconds, worker=worker)
            report = self._join()
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            return Outcome(self.task, error=failure_text(exc), seconds=self.seconds,
                           worker=worker)
        finally:
            self.discard()
        return Outcome(self.task, report=report, seconds=self.seconds, worker=worker)

    def _join(self) -> dict:
        from refacex.video import vault

        n = len(self.parts)
        dest = self.task.dest
        outs = [(self._dest(k), self.parts[k].offset) for k in range(n)]
        tmp = join_parts(self.task.src, outs, dest)
        try:
            sides = [vault.sidecar_path(self._dest(k)) for k in range(n)]
            if all(s.is_file() for s in sides):
                side_tmp = self.folder / "joined.refacex"
                vault.join(sides, side_tmp)
                os.replace(side_tmp, vault.sidecar_path(dest))
            os.replace(tmp, dest)
        except OSError as exc:
            raise OutputError(f"{dest}: cannot write ({exc.strerror or exc})") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return self.report()

    def report(self) -> dict:
        """The whole video's report, as a whole-file run gives it, plus the parts; a
        person on screen across cuts (linked tracks, ``link_tracks``) is one ``person``."""
        from refacex.video import vault

        n = len(self.parts)
        got = [self.results[k] for k in range(n)]
        frames = [int(r["frames"]) for r in got]
        who = people([r["tracks"] for r in got], frames)
        tracks: list[dict] = []
        offset = 0
        for k, r in enumerate(got):
            for t, p in zip(r["tracks"], who[k], strict=True):
                t = dict(t)
                for name in ("first_frame", "last_frame", "first_method_frame"):
                    if t.get(name) is not None:
                        t[name] += offset
                t["keyframes"] = [f + offset for f in t.get("keyframes") or []]
                if t.get("edited"):
                    t["edited"] = (t["edited"][0] + offset, t["edited"][1] + offset)
                t["part"], t["person"] = k, p
                tracks.append(t)
            offset += frames[k]
        swapped = {t["person"] for t in tracks if t["frames"]}
        everyone = {t["person"] for t in tracks}
        wall = time.perf_counter() - self.started
        side = vault.sidecar_path(self.task.dest)
        return {"output": [str(self.task.dest)] + ([str(side)] if side.is_file() else []),
                "frames": sum(frames), "anonymized_tracks": len(swapped),
                "blurred_only_tracks": len(everyone - swapped),
                "regions": sum(int(r["regions"]) for r in got),
                "fps": round(sum(frames) / wall, 2) if wall > 0 else 0.0,
                "parts": n, "parts_redone": sorted(self.reruns), "tracks": tracks}


def run_split(split: VideoSplit, video: Any) -> Outcome:
    """Do ``split`` here, unit after unit, with ``video`` (``Worker.video``)."""
    todo = split.units()
    while todo:
        unit = todo.pop(0)
        todo += split.done(unit, video(str(unit.src), str(unit.dest), unit.hints))
    return split.finish("local")
