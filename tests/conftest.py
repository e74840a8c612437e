"""Shared test setup: offline, deterministic, small thread pools (CI has 2 cores)."""
import os

# Tests must never reach a model hub: everything is built from tiny configs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random Omni-Emotion checkpoint folder, built once per test session.
    Tests only read it (outputs go to their own tmp_path)."""
    from model.checkpoint.loading import build_tiny

    path = tmp_path_factory.mktemp("tiny-checkpoint")
    build_tiny(path)
    return path
