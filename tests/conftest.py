"""Shared test setup: offline, deterministic, small thread pools (CI has 2 cores)."""
import os

# Tests must never reach a model hub: everything is built from tiny configs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
