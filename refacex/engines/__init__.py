"""Engines: how a run's files are spread over processes, and how a killed run resumes.

* ``manifest`` — the SQLite record of what is done (``OUT/.refacex-manifest.sqlite``);
* ``tasks`` — one file's work (``Worker``), picklable run settings (``Job``) and what a
  file's processing reports back (``Task``, ``Outcome``);
* ``runner`` — ``run_tasks``: resume from the manifest, then hand the rest to an engine;
* ``local`` — one file after another in this process (the default);
* ``ray`` — Ray actors, each holding the loaded models (``--engine ray``, the ``[ray]``
  extra; imported only when asked for).

Both engines run the same ``Worker`` code on each file, so they make the same decisions
(faces, donors, tiers) for the same key and inputs. See ``docs/scaling.md``.
"""
