"""Key-holder re-identification: which anonymised images show this person?

A key holder (an investigator with a warrant, a clinic answering a patient's request for
their own records) often needs the images of *one* person, not the originals of everyone.
The payload already carries each face's identity, encrypted (the vault's exact pixels, or
the robust tier's face code: iFADIT's key-controlled identity, made practical without a
separate code that would cost the small photos' few bytes). With the key, each image's
faces are restored **in memory only**, embedded by the recogniser and compared with the
probe's face; nothing restored is written, and the report holds scores and places, not
faces. Without the key nothing links two anonymised images: every payload is sealed
(AEAD), so a wrong key opens none and the search reports that, per file.

``refacex search --key refacex.key --probe person.jpg DIR`` drives this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refacex.errors import NoFaceError, RefacexError
from refacex.faces.recognizers import Recognizer, get_recognizer
from refacex.faces.types import Face
from refacex.payload.keyring import OpenKeys
from refacex.recover import recover


@dataclass
class Match:
    """One restored face of one anonymised image, scored against the probe."""

    path: str
    index: int  # the face's index in that image's payload
    tier: str  # "vault" | "robust": what its identity was read from
    score: float  # recogniser similarity to the probe (higher: more alike)
    same_person: bool  # score at or above the recogniser's threshold
    #: The face's five landmarks in the image searched (where it is; not what it looks like).
    kps: list[list[float]] = field(default_factory=list)


def face_from_kps(kps: np.ndarray) -> Face:
    """A ``Face`` for the recogniser from five landmarks alone (its crop is aligned on
    them; the box is only a bounding estimate)."""
    kps = np.asarray(kps, np.float32)
    centre, span = kps.mean(0), float(np.ptp(kps, axis=0).max())
    side = 2.2 * span
    box = np.array([centre[0] - side / 2, centre[1] - side / 2, side, side], np.float32)
    return Face(box=box, score=1.0, kps=kps)


def probe_embedding(img: np.ndarray, recognizer: Recognizer) -> np.ndarray:
    """The embedding of the probe photo's largest face (``NoFaceError`` if none)."""
    from refacex.pipeline import analyzer

    faces = analyzer().detector.detect(img)
    if not faces:
        raise NoFaceError("no face found in the probe photo")
    face = max(faces, key=lambda f: float(f.box[2] * f.box[3]))
    return recognizer.embed(img, face)


def restored_identities(data: bytes | Path | str, keys: OpenKeys, recognizer: Recognizer
                        ) -> list[tuple[dict, np.ndarray]]:
    """(face report, embedding) of every face of one anonymised image, restored with the
    key in memory (``recover``'s errors pass through: wrong key, no payload...)."""
    res = recover(data, keys)
    out = []
    for f in res.faces:
        if "kps" not in f:  # a face the payload could not restore
            continue
        face = face_from_kps(np.asarray(f["kps"]))
        out.append((f, recognizer.embed(res.image, face)))
    return out


def search(paths: Iterable[Path], probe: np.ndarray, keys: OpenKeys,
           recognizer: str = "sface") -> tuple[list[Match], dict[str, str]]:
    """Score every face of every image in ``paths`` against the probe photo.

    Returns the matches, best first, and the per-file errors (path -> message) of files
    that could not be opened with this key (or hold no payload).
    """
    rec = get_recognizer(recognizer)
    target = probe_embedding(probe, rec)
    matches: list[Match] = []
    errors: dict[str, str] = {}
    for path in paths:
        try:
            found = restored_identities(path, keys, rec)
        except RefacexError as exc:
            errors[str(path)] = f"{type(exc).__name__}: {exc}"
            continue
        for f, emb in found:
            s = rec.similarity(target, emb)
            matches.append(Match(str(path), int(f["index"]), f["tier"], round(s, 4),
                                 bool(rec.same_person(target, emb)), f["kps"]))
    matches.sort(key=lambda m: -m.score)
    return matches, errors
