"""face-api attribute nets: speed per face, and gender agreement on a small LFW sanity set.

Sanity set: the first ``--per-person`` deep-funneled photos of 20 men and 20 women of
LFW, picked by hand among its best-known public figures (politicians, athletes,
actors), labelled by the public gender presentation of the *person*. It is only a sanity
check of the port (a broken conversion or crop drops to chance): 40 people, mostly white
and adult, news photos; not a fairness or accuracy evaluation. Each photo's central face
(YuNet) is cropped at the detector box and at face-api's landmark box (dlib 68 points);
reported: agreement of ``p_male > 0.5`` with the label, per crop; per-face ms of each net
at batch 1 (crop excluded; min and median); the crop's ms.

    .venv/bin/python benchmarks/bench_attributes.py [--per-person 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from refacex.faces.analysis import FaceAnalyzer
from refacex.faces.attributes import (
    AgeGenderEstimator,
    ExpressionEstimator,
    faceapi_crop,
    landmark_box,
)
from refacex.faces.detect import nearest_centre
from refacex.io.images import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MEN = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder",
       "Ariel_Sharon", "Hugo_Chavez", "Junichiro_Koizumi", "Jean_Chretien", "John_Ashcroft",
       "Jacques_Chirac", "Vladimir_Putin", "Arnold_Schwarzenegger", "Tiger_Woods",
       "Luiz_Inacio_Lula_da_Silva", "Silvio_Berlusconi", "Kofi_Annan", "Bill_Clinton",
       "Andre_Agassi", "Roh_Moo-hyun")
WOMEN = ("Serena_Williams", "Venus_Williams", "Jennifer_Capriati", "Laura_Bush",
         "Gloria_Macapagal_Arroyo", "Lindsay_Davenport", "Hillary_Clinton", "Jennifer_Lopez",
         "Britney_Spears", "Nicole_Kidman", "Julianne_Moore", "Kim_Clijsters",
         "Megawati_Sukarnoputri", "Condoleezza_Rice", "Jennifer_Aniston", "Angelina_Jolie",
         "Renee_Zellweger", "Winona_Ryder", "Meryl_Streep", "Halle_Berry")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-person", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    analyzer = FaceAnalyzer()
    ag, ex = AgeGenderEstimator(), ExpressionEstimator()
    labels: list[bool] = []
    p_male: dict[str, list[float]] = {"detector": [], "landmarks": []}
    ms: dict[str, list[float]] = {"crop": [], "age_gender": [], "expression": []}
    missed = 0
    for male, people in ((True, MEN), (False, WOMEN)):
        for person in people:
            for path in sorted((SHARED / "lfw-deepfunneled" / person).glob("*.jpg"))[
                    :args.per_person]:
                img = read_image(path)
                faces = analyzer.detector.detect(img)
                if not faces:
                    missed += 1
                    continue
                face = nearest_centre(faces, img.shape[:2])
                analyzer.describe(img, face, pose=False)
                labels.append(male)
                for kind, box in (("detector", face.box),
                                  ("landmarks", landmark_box(face.landmarks))):
                    t = time.perf_counter()
                    crop = faceapi_crop(img, box)
                    t1 = time.perf_counter()
                    p_male[kind].append(float(ag.predict([crop])[1][0]))
                    t2 = time.perf_counter()
                    ex.predict([crop])
                    t3 = time.perf_counter()
                    ms["crop"].append((t1 - t) * 1e3)
                    ms["age_gender"].append((t2 - t1) * 1e3)
                    ms["expression"].append((t3 - t2) * 1e3)
    y = np.array(labels)
    print(f"{len(y)} faces ({int(y.sum())} of men, {int((~y).sum())} of women), "
          f"{missed} photos without a face; cv2 threads {cv2.getNumThreads()}")
    for kind, p in p_male.items():
        pred = np.array(p) > 0.5
        print(f"{kind:<10} box: gender agreement {(pred == y).mean():.3f} "
              f"(men {pred[y].mean():.3f}, women {(~pred[~y]).mean():.3f})")
    for k, v in ms.items():
        print(f"{k:<11} ms/face: min {min(v):.2f}, median {statistics.median(v):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
