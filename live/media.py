"""The one home of the media constants every stage agrees on, capture to model.

Live windows, training preprocessing, the processor, the quantization harness and the
app all read these names; nothing else in the tree spells 16 kHz, 224 px or 8 frames.
The model's config defaults come from here too, so a checkpoint built with production
defaults expects exactly what the front end delivers.
"""
from __future__ import annotations

AUDIO_RATE = 16_000  # Hz: all audio past the sources is 16 kHz mono float32 (Whisper's rate)
N_FRAMES = 8  # frames per window / clip (paper §4.4: the model's 8 frame positions)
CROP_SIZE = 224  # px, side of a square face crop (FaceXFormer's input)
FRAME_MAX_SIDE = 384  # px, long side frames are stored at for training (SigLIP sees 384×384)
WINDOW_S = 4.0  # s covered by one live window
HOP_S = 1.0  # s between live window ends
