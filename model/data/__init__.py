"""Training/evaluation data: the JSONL manifest format (``manifest``), the paper's
instruction templates (``templates``), builders from public label files
(``builders``) and the decode-once media cache (``preprocess``).

Kept import-light on purpose: import the submodule you need.
"""
