"""A minimal PNG writer (8-bit RGB, no filter, zlib): the batch thumbnails need no imaging library."""
from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: bytes, width: int, height: int) -> bytes:
    """``rgb``: height rows of width * 3 bytes (R, G, B), top row first."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"{len(rgb)} bytes is not {width}x{height} RGB")
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride:(y + 1) * stride] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def image_strip(images, gap: int = 2, background: int = 255) -> bytes:
    """The images (uint8 tensors [N, 3, H, W]) side by side, ``gap`` pixels apart, as one PNG."""
    import torch

    n, c, h, w = images.shape
    width = n * w + (n - 1) * gap
    canvas = torch.full((h, width, 3), background, dtype=torch.uint8)
    for i in range(n):
        img = images[i]
        if c == 1:
            img = img.expand(3, h, w)
        canvas[:, i * (w + gap):i * (w + gap) + w, :] = img.permute(1, 2, 0)
    return encode_png(canvas.contiguous().numpy().tobytes(), width, h)
