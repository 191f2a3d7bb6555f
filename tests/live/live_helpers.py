"""Helpers shared by the live tests (test modules never import each other)."""

import io

import numpy as np
from PIL import Image


def jpeg(value: int, size=(16, 12)) -> bytes:
    """A small JPEG of one grey `value` (size = (width, height))."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# Three distinct 16x12 camera frames.
FRAMES = [jpeg(40), jpeg(120), jpeg(200)]
