"""Emotion data curation (paper §3): the SRE pipeline (``sre``), shard merging
(``merge``) and, on top of their output folders, HRE selection, human review,
agreement, export and study recordings. See docs/curation.md.

Modules: ``endpoint`` (the one way to call a model server), ``stages`` (the five SRE
stages for one clip), ``asr`` (local Whisper), ``records`` (output files, crash-safe
appends, resume, stats), ``sre`` (the run), ``merge``.
"""
