"""Video: video in, video out, one donor per person-track, key-holder recovery.

``anonymize_video(src, dest, keys)`` (``video/anonymize.py``; ``engine_class=`` the
real-time engine of ``video/realtime.py``) and ``recover_video(src, dest, keys)``
(``video/recover.py``); tracks and smoothing in ``video/track.py``; decode/encode threads
in ``video/threads.py``; the sidecar vault container in ``video/vault.py`` and the
robust keyframe codes in ``video/robust.py``; synthetic test clips in
``video/synth.py``. The layer sits above ``recover`` (it reuses the image
vault's checks) and below ``api``.

Designed for the later slices: frames stream through with a bounded lookahead (a live
source can feed ``VideoAnonymizer.analyse``/``edit`` directly), and all per-video state
lives in one ``VideoAnonymizer`` so that chunks of a long video can be farmed out to
workers once tracks are stitched across chunk borders.
"""

from __future__ import annotations
