"""Seeded mutation fuzzer over what ``inspect`` and ``recover`` read from a file.

Why not atheris: it needs a coverage-instrumented build and runs unbounded; a seeded loop
is reproducible, runs in CI time and still reaches every parser, because mutations happen
at three levels:

* **sealed bytes** (envelope, crypto header, ciphertext; truncations, extensions) — what a
  stranger can change: must end in a one-line ``RefacexError``;
* **plaintext** (records, varints, face fields) re-sealed *and signed by a trusted site* —
  what a buggy or compromised site could write: the parser, the validation and the
  restore code must reject or use it, never raise anything else;
* **container** (the PNG file around the vault) — the vault carrier's own parser.

Each case runs ``inspect_payload``, ``decode_payload`` and a full ``recover`` of a small
image carrying the mutant. Two stand-ins keep ~2,000 cases within CI time: scrypt runs at
a low cost (the cost is read from each header, so parsing is unchanged), and the in-pixel
search (``robust.locate``, seconds per image; its bit-level decoding is tested in
``tests/test_stego_robust.py``) hands the current compact mutant straight to recovery, as
if it had been read from the pixels. Any exception that is not a ``RefacexError`` is a
finding.

Run: ``.venv/bin/python tests/security/fuzz_payloads.py --n 20000 [--seed 1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.errors import RefacexError
from refacex.io.images import encode_image
from refacex.payload import crypto
from refacex.payload import format as fmt
from refacex.payload.binding import image_binding
from refacex.payload.format import FaceRecord, Payload
from refacex.payload.keyring import OpenKeys
from refacex.payload.sitekeys import SiteKey
from refacex.recover import recover
from refacex.stego import robust, vault

SITE = SiteKey(bytes(range(7, 39)))
KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))
PASS = b"fuzz pass"
SIZE = 48


@dataclass
class Findings:
    cases: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)


def _canvas() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)


def _faces() -> list[FaceRecord]:
    img = _canvas()
    out = []
    for i, (x, y) in enumerate(((4, 4), (24, 20))):
        out.append(FaceRecord(index=i, affine=np.array([[2.0, 0.1, -x], [-0.1, 2.0, -y]]),
                              crop_size=64, rect=(x, y, 16, 16), codec="png",
                              data=encode_image(img[y:y + 16, x:x + 16], ".png")))
    return out


def _plaintext_payload() -> Payload:
    p = Payload(tier="vault", image_size=(SIZE, SIZE), faces=_faces(), method="blur",
                extra={"n": 3, "s": "x", "f": 1.5, "b": b"\x00"})
    p.binding = image_binding(_canvas(), [f.rect for f in p.faces])
    return p


def _seal_signed(plaintext: bytes, passphrase: bool = False) -> bytes:
    env = fmt.MAGIC + bytes([(fmt.FORMAT_MAJOR << 4) | fmt.FORMAT_MINOR, 1, 0])
    sig = SITE.sign(fmt.SIGNATURE_CONTEXT + env + plaintext)
    rec = bytearray()
    fmt.put_record(rec, fmt.TAG_SIGNATURE, SITE.public.site_id + sig)
    kw = {"passphrase": PASS} if passphrase else {"recipients": [KEY.public_key()]}
    return env + crypto.seal(plaintext + bytes(rec), aad=env, **kw)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    op = rng.randrange(7)
    if not b:
        return bytes(rng.randbytes(rng.randrange(1, 16)))
    if op == 0:  # flip bits
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:  # set bytes to interesting values
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    elif op == 2:  # truncate
        del b[rng.randrange(len(b)):]
    elif op == 3:  # extend
        b += rng.randbytes(rng.randint(1, 64))
    elif op == 4:  # insert random bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 16))
    elif op == 5:  # delete a span
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 16)]
    else:  # duplicate a span
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randint(1, 32))
        b[i:i] = b[i:j]
    return bytes(b)


def _run_case(f: Findings, label: str, blob: bytes, carrier: bytes, keys: OpenKeys) -> None:
    f.cases += 1
    outcome = "ok"
    try:
        for b in [blob, *_in_pixels]:
            if not b:
                continue
            with contextlib.suppress(RefacexError):
                fmt.inspect_payload(b)
            with contextlib.suppress(RefacexError):
                fmt.decode_payload(b, **keys.crypto_kwargs())
        try:
            data = vault.attach(carrier, blob) if blob else carrier
        except (RefacexError, ValueError):
            data = carrier
        try:
            res = recover(data, keys)
            outcome = f"restored:{res.tier}"
        except RefacexError as exc:
            outcome = type(exc).__name__
    except Exception:  # noqa: BLE001 - the point: anything else is a finding
        outcome = "CRASH"
        f.crashes.append(f"{label}: {blob[:80].hex()}\n{traceback.format_exc()}")
    f.by_outcome[outcome] = f.by_outcome.get(outcome, 0) + 1


_in_pixels: list[bytes] = []  # the compact mutant the stand-in locate "finds"


def _fake_locate(img: np.ndarray) -> robust.Located:
    if not _in_pixels:
        from refacex.errors import NoPayloadError

        raise NoPayloadError("no robust payload found in this image")
    h, w = img.shape[:2]
    hc, wc = robust._canonical_shape(h, w, False)
    to_canonical = np.array([[wc / w, 0.0, 0.5 * wc / w - 0.5], [0.0, hc / h, 0.5 * hc / h - 0.5]])
    return robust.Located(_in_pixels[0], to_canonical, robust._n_blocks(h, w)[1])


@contextlib.contextmanager
def _fast_stand_ins():
    saved = crypto.VAULT_SCRYPT, crypto.COMPACT_SCRYPT, robust.locate
    crypto.VAULT_SCRYPT = crypto.COMPACT_SCRYPT = crypto.ScryptParams(8)
    robust.locate = _fake_locate
    try:
        yield
    finally:
        crypto.VAULT_SCRYPT, crypto.COMPACT_SCRYPT, robust.locate = saved
        _in_pixels.clear()


def fuzz(n: int, seed: int = 1) -> Findings:
    """Run ``n`` mutated payloads; returns counts per outcome and any crashes."""
    with _fast_stand_ins():
        return _fuzz(n, seed)


def _compact_payload() -> Payload:
    from refacex.payload.facecode import CODE_SIZE, codec

    code = bytes([3]) + bytes(range(40))
    assert codec().levels[3].nbytes <= len(code)
    k = CODE_SIZE / 24
    m = np.array([[k, 0, -12 * k], [0, k, -12 * k]])
    faces = [FaceRecord(index=0, affine=m, crop_size=CODE_SIZE, rect=(0, 0, 0, 0),
                        codec="pca-v1", data=code)]
    return Payload(tier="robust", image_size=(SIZE, SIZE), faces=faces)


def _fuzz(n: int, seed: int) -> Findings:
    rng = random.Random(seed)
    carrier = encode_image(_canvas(), ".png")
    pk_keys = OpenKeys(private_key=KEY, trusted=[SITE.public])
    pw_keys = OpenKeys(passphrase=PASS, trusted=[SITE.public])
    base = _plaintext_payload()
    plaintext = fmt.encode_plaintext(base, compact=False)
    compact_plaintext = fmt.encode_plaintext(_compact_payload(), compact=True)
    sealed = {
        "signed-vault": (fmt.encode_payload(base, recipients=[KEY.public_key()],
                                            compact=False, site=SITE), pk_keys),
        "unsigned-vault": (fmt.encode_payload(base, recipients=[KEY.public_key()],
                                              compact=False), pk_keys),
        "passphrase-vault": (fmt.encode_payload(base, passphrase=PASS, compact=False),
                             pw_keys),
        "compact-auth": (fmt.encode_payload(_compact_payload(), recipients=[KEY.public_key()],
                                            site=SITE), pk_keys),
        "compact-passphrase": (fmt.encode_payload(_compact_payload(), passphrase=PASS),
                               pw_keys),
    }
    f = Findings()
    for i in range(n):
        kind = i % 3
        if kind == 0:  # sealed bytes
            name = rng.choice(list(sealed))
            blob, keys = sealed[name]
            mutant = _mutate(blob, rng)
            if name.startswith("compact"):  # carried in the pixels, not in a vault
                _in_pixels[:] = [mutant]
                _run_case(f, f"sealed/{name}", b"", carrier, keys)
                _in_pixels.clear()
            else:
                _run_case(f, f"sealed/{name}", mutant, carrier, keys)
        elif kind == 1 and rng.random() < 0.3:  # compact plaintext, trusted seal
            env = fmt.MAGIC + bytes([(fmt.FORMAT_MAJOR << 4) | fmt.FORMAT_MINOR, 2, 0])
            pt = _mutate(compact_plaintext, rng)
            _in_pixels[:] = [env + crypto.seal(pt, recipients=[KEY.public_key()], aad=env,
                                               compact=True, sender=SITE.agreement_key)]
            _run_case(f, "compact-plaintext", b"", carrier, pk_keys)
            _in_pixels.clear()
        elif kind == 1:  # plaintext, re-sealed and signed by the trusted site
            pw = rng.random() < 0.2
            mutant = _seal_signed(_mutate(plaintext, rng), passphrase=pw)
            _run_case(f, "plaintext", mutant, carrier, pw_keys if pw else pk_keys)
        else:  # the container around a genuine vault
            data = _mutate(vault.attach(carrier, sealed["signed-vault"][0]), rng)
            f.cases += 1
            try:
                try:
                    blob = vault.extract(data)
                    if blob is not None:
                        fmt.inspect_payload(blob)
                except RefacexError:
                    pass
                recover(data, pk_keys)
                outcome = "restored"
            except RefacexError as exc:
                outcome = type(exc).__name__
            except Exception:  # noqa: BLE001
                outcome = "CRASH"
                f.crashes.append(f"container: {traceback.format_exc()}")
            f.by_outcome[outcome] = f.by_outcome.get(outcome, 0) + 1
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    f = fuzz(args.n, args.seed)
    dt = time.perf_counter() - t0
    print(f"{f.cases} cases in {dt:.1f} s, {len(f.crashes)} crashes")
    for k, v in sorted(f.by_outcome.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<28} {v}")
    for c in f.crashes[:5]:
        print(c)
    sys.exit(1 if f.crashes else 0)


if __name__ == "__main__":
    main()
