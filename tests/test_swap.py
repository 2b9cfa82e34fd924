"""The ``swap`` anonymiser on real photos: identity removed for BOTH recognisers, face
still detected with the same pose, nothing written outside the edit rectangle, keyed
and reproducible donor choice, strength 0 ~ identity, the shipped banks (photoreal donors
screened against the training people; templates averaging >= 30 people), grey photos
stay grey, a fringe stays in front of the swapped forehead."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refacex.anonymize import get_method
from refacex.anonymize.base import FaceContext
from refacex.anonymize.donors import MIN_MEMBERS, DonorBank, GanDonorBank, Traits, load_bank
from refacex.anonymize.swap import SwapAnonymizer
from refacex.faces import get_recognizer
from refacex.faces.detect import match_detection
from refacex.faces.masks import face_mask

RECOGNISERS = ("sface", "dlib")


@pytest.fixture(scope="module")
def swapped(analyzer, t1, astronaut):
    """Per photo: (original, anonymised, original faces, contexts, re-detected faces)."""
    out = {}
    sw = SwapAnonymizer(strength=1.0)
    for name, img in (("t1", t1), ("astronaut", astronaut)):
        faces = analyzer.analyze(img, recognizers=RECOGNISERS)
        anon = img.copy()
        ctxs = []
        for f in faces:
            ctx = FaceContext.for_face(f, img.shape[:2], donor_key=b"test-key")
            sw.apply(anon, ctx)
            ctxs.append(ctx)
        new = analyzer.analyze(anon, recognizers=RECOGNISERS)
        out[name] = (img, anon, faces, ctxs, new)
    return out


def _matched(faces, new):
    for f in faces:
        yield f, match_detection(f, new)[0]


def test_shipped_templates_are_group_averages():
    bank = load_bank("templates")
    assert 12 <= len(bank) <= 24
    assert int(bank.counts.min()) >= MIN_MEMBERS
    assert bank.images.shape[1:] == (256, 256, 3) and bank.images.dtype == np.uint8
    assert bank.landmarks.shape == (len(bank), 68, 2)
    assert len(set(bank.ids)) == len(bank)


def test_shipped_photoreal_donors_are_screened():
    """The bank is big enough that the key decides, every donor decodes in the canonical
    geometry, and every donor was checked against every training person (the build
    stored each donor's closest SFace similarity to them)."""
    bank = load_bank("gan")
    assert isinstance(bank, GanDonorBank) and len(bank) >= 200
    assert len(set(bank.ids)) == len(bank) and all(i.startswith("g") for i in bank.ids)
    z = np.load(bank.path)
    # Closer to no training person than 99 % of real people are to their nearest stranger
    # (a 1:N threshold: at SFace's 1:1 threshold, 0.363, everyone matches somebody).
    assert 0.363 < float(z["screen_threshold"]) < 0.65
    assert float(z["max_train_sface"].max()) < float(z["screen_threshold"])
    for k in (0, len(bank) // 2, len(bank) - 1):
        img = bank.image(k)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and img.std() > 20
    assert bank.landmarks.shape == (len(bank), 68, 2)
    # Perceived sex and age were measured, and the bank covers both sexes and ages.
    assert 0.25 < float((bank.p_male > 0.5).mean()) < 0.75
    assert bank.age.min() < 25 and bank.age.max() > 50


def test_keyed_choice_matches_traits():
    """A woman's candidates are women, a man's are men; the key permutes within them."""
    bank = load_bank("gan")
    skin = np.median(bank.skin, 0)
    for p_male in (0.05, 0.95):
        t = Traits(skin=skin, yaw=0.0, mouth_open=0.05, p_male=p_male, age=35.0)
        firsts = {bank.order_for(None, None, t, b"k%d" % i, None)[0] for i in range(12)}
        assert len(firsts) >= 4
        assert all((bank.p_male[k] > 0.5) == (p_male > 0.5) for k in firsts)


def test_donors_with_a_fringe_or_cap_go_last():
    """A platinum fringe (g00800) pasted onto t1's dark-haired woman showed as a patch of
    blonde hair on her forehead: donors with hair or a cap over the lower forehead are
    recognised by texture (light hair passes the darker-than-skin occluder test) and
    come after every bare-forehead donor among the nearest, for any key."""
    bank = load_bank("gan")
    ids = list(bank.ids)
    assert bank.has_fringe(ids.index("g00800")) and bank.has_fringe(ids.index("g00419"))
    assert not bank.has_fringe(ids.index("g01470")) and not bank.has_fringe(ids.index("g00281"))
    k = ids.index("g00800")
    t = Traits(skin=bank.skin[k], yaw=float(bank.pose[k, 0]), mouth_open=float(bank.mouth_open[k]),
               p_male=float(bank.p_male[k]), age=float(bank.age[k]), happy=float(bank.happy[k]))
    assert int(np.argsort(bank.distances(t))[0]) == k  # it is its own nearest donor...
    for i in range(8):
        order = bank.order_for(None, None, t, b"k%d" % i, None)
        assert order.index(k) >= len(bank) - 2 * 16  # ...and still comes after the bare ones
        assert not any(bank.has_fringe(j) for j in order[:16])


def test_keyed_choice_matches_smile_and_age():
    """A neutral face's candidates are not smiling and an older face's are not young: most
    rendered faces smile, and a smiling donor's cheeks survive the warp onto a neutral
    face (the smile term, ``SMILE_WEIGHT``)."""
    bank = load_bank("gan")
    skin = np.median(bank.skin, 0)
    for happy in (0.0, 1.0):
        t = Traits(skin=skin, yaw=0.0, mouth_open=0.05, p_male=0.95, age=35.0, happy=happy)
        near = np.argsort(bank.distances(t))[:16]
        assert np.mean(np.abs(bank.happy[near] - happy) < 0.5) >= 0.8
    t = Traits(skin=skin, yaw=0.0, mouth_open=0.05, p_male=0.95, age=55.0, happy=1.0)
    near = np.argsort(bank.distances(t))[:16]
    assert np.median(np.abs(bank.age[near] - 55.0)) <= 8.0


def test_perceived_sex_kept(swapped):
    """Every face clearly perceived as one sex is still perceived so after the swap
    (verified candidates whose perceived sex flipped are last resorts)."""
    from refacex.faces.attributes import face_attributes

    checked = 0
    for img, anon, faces, _ctxs, new in swapped.values():
        for f, m in _matched(faces, new):
            p0 = face_attributes(img, f).p_male
            if abs(p0 - 0.5) < 0.25:
                continue
            checked += 1
            assert (face_attributes(anon, m).p_male > 0.5) == (p0 > 0.5)
    assert checked >= 4


def _lip_lab(img, lm):
    lips = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(lips, [np.round(lm[48:60]).astype(np.int32)], 255)
    cv2.fillPoly(lips, [np.round(lm[60:68]).astype(np.int32)], 0)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    return lab[cv2.erode(lips, np.ones((3, 3), np.uint8)) > 0].mean(0)


def test_lip_colour_kept(swapped):
    """The lips keep their own colour: rendered donors' saturated, lipstick-red lips
    must not show on the faces (``_match_lips``). Median over faces, Lab a/b units."""
    diffs = []
    for img, anon, faces, _ctxs, new in swapped.values():
        for f, m in _matched(faces, new):
            d = _lip_lab(anon, m.landmarks) - _lip_lab(img, f.landmarks)
            diffs.append(float(np.linalg.norm(d[1:])))
    assert len(diffs) >= 5
    assert np.median(diffs) < 6.0, diffs


def test_router_builds_swap():
    m = get_method("swap", strength=0.5)
    assert m.name == "swap" and m.replaces_identity and m.strength == 0.5


def test_every_face_still_detected(swapped):
    for _img, _anon, faces, _ctxs, new in swapped.values():
        assert len(new) == len(faces)
        assert all(m is not None for _f, m in _matched(faces, new))


@pytest.mark.parametrize("rec_name", RECOGNISERS)
def test_identity_removed(swapped, rec_name):
    """The issue's bar: for BOTH recognisers, no anonymised face is the same person as its
    original (the swap verifies this itself, with a safety margin, before accepting)."""
    rec = get_recognizer(rec_name)
    for _img, _anon, faces, _ctxs, new in swapped.values():
        for f, m in _matched(faces, new):
            assert m is not None
            a, b = f.embeddings[rec_name], m.embeddings[rec_name]
            assert not rec.same_person(a, b), (rec_name, rec.score(a, b))


def test_verification_is_recorded(swapped):
    margin = SwapAnonymizer().verify_margin
    risks = [c.info["privacy_risk"] for *_, ctxs, _new in swapped.values() for c in ctxs]
    # < 0: private with the safety margin; < margin: beyond the recognisers' own
    # thresholds; anything worse must have been blurred.
    for *_, ctxs, _new in swapped.values():
        for c in ctxs:
            assert c.info["privacy_risk"] < margin or c.info.get("fallback") == "blur"
    assert sum(r < 0 for r in risks) >= len(risks) - 1, risks


def test_pose_kept(swapped):
    errs = []
    for _img, _anon, faces, _ctxs, new in swapped.values():
        for f, m in _matched(faces, new):
            if abs(f.pose.yaw) > 45:  # near-profile: the 68-point pose itself is unreliable
                continue
            errs.append((abs(m.pose.yaw - f.pose.yaw), abs(m.pose.pitch - f.pose.pitch)))
    errs_a = np.array(errs)
    assert len(errs_a) >= 4
    # Every face within 5° (the requirement). The swap holds its new landmarks at the
    # face's own PnP pose and verifies the pose as this test measures it (full-image
    # detection, 68 points, PnP; at most 4°), re-rendering against texture-induced drift.
    # Measured (t1 only, 2026-12-02): median 1.2° yaw / 2.1° pitch, max 1.7° yaw and 3.9°
    # pitch (t1 face 0); an earlier shape change that also froze the mouth's and eyes'
    # widths reached 5.7° of pitch on t1 face 1. Before pose holding, t1 face 0 (rolled
    # 27°) drifted 7.3° in yaw, t1 face 2 5.1° in yaw and the escalated astronaut 7.4°
    # in pitch.
    assert np.median(errs_a[:, 0]) < 5.0 and errs_a[:, 0].max() < 5.0, errs_a  # yaw
    assert np.median(errs_a[:, 1]) < 5.0 and errs_a[:, 1].max() < 5.0, errs_a  # pitch


def test_writes_only_inside_rect(swapped):
    for img, anon, _faces, ctxs, _new in swapped.values():
        inside = np.zeros(img.shape[:2], bool)
        for c in ctxs:
            x, y, w, h = c.rect
            inside[y:y + h, x:x + w] = True
            assert c.info["donor"].startswith("g")
        assert np.array_equal(img[~inside], anon[~inside])
        assert not np.array_equal(img[inside], anon[inside])


def test_same_key_same_donor_and_keys_vary(analyzer, astronaut):
    f = analyzer.analyze(astronaut, recognizers=("sface",))[0]
    sw = SwapAnonymizer()
    picks = []
    for key in [b"k%d" % i for i in range(20)] + [b"k0"]:
        ctx = FaceContext.for_face(f, astronaut.shape[:2], donor_key=key)
        sw.apply(astronaut.copy(), ctx)
        picks.append(ctx.info["donor"])
    assert picks[0] == picks[-1]
    assert len(set(picks)) >= 2


def test_bucket_is_stable_under_small_embedding_noise():
    bank: DonorBank = load_bank("templates")
    rng = np.random.default_rng(0)
    e = rng.standard_normal(128).astype(np.float32)
    desc = bank.centroids[0]
    same = sum(bank.choose(desc, None, b"key", e) == bank.choose(
        desc, None, b"key", e + 0.05 * rng.standard_normal(128).astype(np.float32))
        for _ in range(20))
    assert same >= 16
    assert bank.choose(desc, None, None, e) == bank.choose(desc, None, None, e)


def test_strength_zero_is_nearly_identity(analyzer, t1):
    faces = analyzer.analyze(t1)
    sw = SwapAnonymizer(strength=0.0)
    for f in faces:
        out = t1.copy()
        ctx = FaceContext.for_face(f, t1.shape[:2])
        sw.apply(out, ctx)
        m = face_mask(t1.shape[:2], f.landmarks) > 0
        mse = np.mean((out[m].astype(np.float64) - t1[m].astype(np.float64)) ** 2)
        psnr = 10 * np.log10(255.0**2 / max(mse, 1e-9))
        assert psnr > 35.0, psnr


def test_strength_must_be_in_range():
    with pytest.raises(ValueError):
        SwapAnonymizer(strength=1.5)


@pytest.mark.shared
def test_build_inputs_exclude_eval_people(shared_data):
    """The donor build reads only training people (never the LFW evaluation split)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "build_donors.py"
    spec = importlib.util.spec_from_file_location("build_donors", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    photos = mod.photo_list(4069, 7)
    evals = set((shared_data / "splits/lfw_eval_people.txt").read_text().split())
    lfw = {p.split(":", 1)[1] for p, _ in photos if p.startswith("lfw:")}
    assert lfw and not (lfw & evals)
    assert all("test_dataset" not in str(path) for _, path in photos)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1)


def test_grey_photo_stays_grey(analyzer, tom):
    """The Tom Hanks sample is monochrome: the swapped face must not bring colour in."""
    f = analyzer.analyze(tom)[0]
    out = tom.copy()
    SwapAnonymizer(verify=False).apply(out, FaceContext.for_face(f, tom.shape[:2], b"k"))
    assert _changed(tom, out).max() > 40  # the face did change
    c = out.astype(np.int16)
    assert np.abs(c[..., 0] - c[..., 1]).max() <= 2 and np.abs(c[..., 1] - c[..., 2]).max() <= 2


def test_fringe_stays_in_front(analyzer, astronaut):
    """Dark strands drawn across the forehead (a synthetic fringe) keep their pixels while
    the skin between them is replaced: the occluder stays in front of the donor."""
    f = analyzer.analyze(astronaut)[0]
    img = astronaut.copy()
    lm = f.landmarks
    brow_y = float(lm[17:27, 1].min())
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    strands = np.zeros(img.shape[:2], np.uint8)
    x0, x1 = int(lm[19, 0]), int(lm[24, 0])
    for i, x in enumerate(range(x0, x1, max(6, int(iod / 5)))):
        top = int(brow_y - 0.9 * iod)
        cv2.line(strands, (x, top), (x + 4 + (i % 3), int(brow_y - 0.15 * iod)), 255, 3)
    img[strands > 0] = (30, 35, 45)  # dark brown hair, BGR
    faces = analyzer.analyze(img)
    out = img.copy()
    SwapAnonymizer(verify=False).apply(out, FaceContext.for_face(faces[0], img.shape[:2], b"k"))
    core = cv2.erode(strands, np.ones((3, 3), np.uint8)) > 0
    diff = _changed(img, out)
    assert np.median(diff[core]) <= 12, np.median(diff[core])
    # ...while the face itself (cheeks, nose) was replaced.
    cheeks = face_mask(img.shape[:2], lm, 0.0) > 0
    assert np.median(diff[cheeks]) > 12


def test_quality_mode_renders_the_donor_posed_like_the_face():
    """``--render-donors``: the donor's style moves along the fitted yaw direction, and the
    re-rendered face turns the way it was asked to (measured by our own PnP pose)."""
    pytest.importorskip("openvino")
    from refacex.anonymize.gan_render import DonorRenderer
    from refacex.faces.pose import estimate_pose

    bank = load_bank("gan")
    r = DonorRenderer(bank)
    k = int(np.argmin(np.abs(bank.pose[:, 0])))  # a frontal donor
    yaws = []
    for target in (-15.0, 15.0):
        got = r.render(k, {"yaw": float(bank.pose[k, 0]) + target})
        assert got is not None
        crop, lm = got
        assert crop.shape == (256, 256, 3)
        yaws.append(estimate_pose(lm, crop.shape[:2]).yaw)
    assert yaws[1] - yaws[0] > 10.0, yaws
