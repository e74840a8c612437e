"""The shared contract below both the front end (``live/``) and the model (``model/``):
the media rules (`media`), the command-line convention (`cli`), writing whole and
append-only files (`files`, `appendfile`) and the result of one window (`result`).
It imports nothing else of the project."""
