"""The adversarial probes of docs/security.md, re-run: how each attack ends today.

Each probe is run ``--trials`` times with fresh keys and random content; the table counts
outcomes (error class, or the tier recovery used). The line that matters is "restored a
face the attacker chose / a face of another image": it must be 0 everywhere.

    .venv/bin/python benchmarks/security_probes.py [--trials 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from refacex.errors import RefacexError
from refacex.io.images import encode_image, read_image
from refacex.models import resolve
from refacex.payload import format as fmt
from refacex.payload.binding import image_binding
from refacex.payload.format import FaceRecord, Payload, encode_payload
from refacex.payload.keyring import OpenKeys, SealKeys
from refacex.payload.sitekeys import SiteKey
from refacex.pipeline import anonymize, encode_output
from refacex.recover import recover
from refacex.stego import vault


def _outcome(data: bytes, keys: OpenKeys) -> str:
    try:
        res = recover(data, keys)
    except RefacexError as exc:
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - a traceback is what the probes hunt for
        return f"CRASH {type(exc).__name__}"
    if res.vault_refused:
        return f"vault refused ({res.vault_refused}), restored from {res.tier}"
    return f"restored from {res.tier}"


def _forged_vault(img: np.ndarray, rng: np.random.Generator, variant: str,
                  recipient, site: SiteKey | None) -> bytes:
    """A vault a holder of the .pub writes for ``img``: bound to it, the forger's content."""
    h, w = img.shape[:2]
    x, y, s = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2)), 64
    patch = {"grey patch": np.full((s, s, 3), 128, np.uint8),
             "chosen face": rng.integers(0, 255, (s, s, 3), dtype=np.uint8)}.get(
                 variant, np.zeros((s, s, 3), np.uint8))
    one = FaceRecord(index=0, affine=np.array([[1.0, 0, -x], [0, 1.0, -y]]), crop_size=256,
                     rect=(x, y, s, s), codec="png", data=encode_image(patch, ".png"))
    faces = {"0 faces": [], "5,000 faces": [one] * 5000}.get(variant, [one])
    p = Payload(tier="vault", image_size=(w, h), faces=faces, method="blur")
    p.binding = image_binding(img, [f.rect for f in faces])
    return encode_payload(p, recipients=[recipient], compact=False, site=site)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    astro = read_image(resolve("astronaut"))
    table: dict[str, Counter] = {}
    t0 = time.perf_counter()
    for trial in range(args.trials):
        print(f"trial {trial + 1}/{args.trials}", flush=True)
        key, site = X25519PrivateKey.generate(), SiteKey.generate()
        seal = SealKeys(recipients=[key.public_key()], site=site)
        opener = OpenKeys(private_key=key, trusted=[site.public])
        # Two frames of one camera: same size, different content.
        shift = int(rng.integers(5, 40))
        a_img = np.clip(astro.astype(int) + shift, 0, 255).astype(np.uint8)
        a = anonymize(astro, seal, method="blur")
        b = anonymize(a_img, seal, method="blur")
        for suffix in (".png", ".jpg"):
            data_a, data_b = encode_output(a, suffix), encode_output(b, suffix)
            spliced = vault.attach(vault.strip(data_b), vault.extract(data_a))
            table.setdefault(f"splice A's vault onto B ({suffix[1:]})", Counter())[
                _outcome(spliced, opener)] += 1
        plain = encode_image(a.image, ".png")
        for variant in ("chosen face", "grey patch", "0 faces", "5,000 faces"):
            for who, signer in (("unsigned", None), ("stranger site", SiteKey.generate())):
                blob = _forged_vault(a.image, rng, variant, key.public_key(), signer)
                table.setdefault(f"forged with the .pub, {who}: {variant}", Counter())[
                    _outcome(vault.attach(plain, blob), opener)] += 1
        other = X25519PrivateKey.generate().public_key()
        wrong = encode_payload(a.vault_payload, recipients=[other], compact=False, site=site)
        table.setdefault("vault for another key (in-pixel tier intact)", Counter())[
            _outcome(vault.attach(plain, wrong), opener)] += 1
        blob = bytearray(vault.extract(encode_output(a, ".png")))
        blob[fmt.ENVELOPE_LEN + 34] ^= 0xFF
        table.setdefault("vault key-id bytes changed (in-pixel tier intact)", Counter())[
            _outcome(vault.attach(plain, bytes(blob)), opener)] += 1
    out = {k: dict(v) for k, v in table.items()}
    print(json.dumps(out, indent=2))
    print(f"{args.trials} trials per probe in {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
