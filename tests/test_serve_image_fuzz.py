"""Hypothesis on the image decoding path (safetyvlm.serve.images) with mutated real photos: whatever the
bytes, `decode_image` returns an RGB image within the limits or raises BadInput with a 4xx — nothing
else escapes, nothing hangs, no bomb gets decoded."""

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from safetyvlm.serve.images import BadInput, decode_image

PHOTOS = sorted((Path(__file__).parent / "fixtures" / "real-tools").glob("*/images/*.jpg"))[:4]
LIMITS = dict(max_bytes=2_000_000, max_pixels=4_000_000)


def _seeds() -> list[bytes]:
    """Real photos, downscaled and re-encoded in every accepted format (and a few modes)."""
    out = []
    for i, path in enumerate(PHOTOS):
        im = Image.open(path)
        im.thumbnail((96, 96))
        for fmt, mode in [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("WEBP", "RGB"),
                          ("BMP", "RGB"), ("TIFF", "CMYK"), ("PNG", "I;16")]:
            if (i + len(out)) % 2 and fmt in ("BMP", "TIFF"):
                continue
            buf = io.BytesIO()
            im.convert(mode).save(buf, fmt)
            out.append(buf.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "header"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "header":  # the first bytes hold sizes, chunk lengths, offsets: the dangerous part
            p = draw(st.integers(0, min(len(data), 64)))
            data[p:p + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


def _check(data: bytes):
    try:
        im = decode_image(data, **LIMITS)
    except BadInput as e:
        assert 400 <= e.status < 500 and str(e) and e.reason
        return
    assert im.mode == "RGB" and im.width * im.height <= LIMITS["max_pixels"]


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_unmutated_seeds_decode(seed):
    assert decode_image(SEEDS[seed], **LIMITS).mode == "RGB"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_real_photos_decode_or_are_refused_with_a_4xx(data):
    _check(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused_with_a_4xx(data):
    _check(data)
