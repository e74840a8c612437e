"""The page's helpers (above the front end, the model and quant/): one browser tab's
live loop (`session`), what the page draws (`render`), hosting it (`hosting`), the File
tab (`file_analysis`) and exports (`exports`). Only `app.py` imports them."""
