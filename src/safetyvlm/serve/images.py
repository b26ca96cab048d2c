"""Decode untrusted image bytes into an RGB PIL image, or refuse with a status and a reason.

Every refusal is a `BadInput` (HTTP status + message for the client); nothing else escapes for bad
bytes, so a hostile upload can only ever earn a 4xx. The pixel limit is checked from the header,
before any pixel is decoded, so a small file that would inflate to gigabytes (a decompression bomb)
costs nothing.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

# Formats a camera or a browser produces; anything else PIL can open (PSD, EPS via ghostscript, ...) is
# refused as unsupported rather than trusted to a rarely exercised decoder.
ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp",
                   "GIF": "image/gif", "TIFF": "image/tiff"}


class BadInput(ValueError):
    """A client error: `status` is the HTTP status to answer with, str(self) says what is wrong."""

    def __init__(self, status: int, message: str, reason: str = "bad_input"):
        super().__init__(message)
        self.status, self.reason = status, reason


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    if not data:
        raise BadInput(400, "the image is empty (0 bytes)", "empty")
    if len(data) > max_bytes:
        raise BadInput(413, f"the image is {len(data)} bytes; the limit is {max_bytes}", "body_too_large")
    try:
        with warnings.catch_warnings():
            # PIL only *warns* between MAX_IMAGE_PIXELS and twice that; make every bomb an error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt = im.format
            if fmt not in ALLOWED_FORMATS:
                raise BadInput(415, f"unsupported image format {fmt}; send one of "
                               f"{', '.join(sorted(ALLOWED_FORMATS))}", "unsupported_format")
            w, h = im.size
            if w < 1 or h < 1:
                raise BadInput(400, f"the image has no pixels ({w}x{h})", "not_an_image")
            if w * h > max_pixels:
                raise BadInput(413, f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}",
                               "too_many_pixels")
            im.load()  # decodes now: a truncated or corrupt file fails here, not later in the model
            return im.convert("RGB")
    except BadInput:
        raise
    except UnidentifiedImageError:
        raise BadInput(400, "the body is not an image PIL can identify (expected PNG, JPEG, WEBP, ...)",
                       "not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL's own guard (Image.MAX_IMAGE_PIXELS) can fire inside open(), before our check
        raise BadInput(413, f"the image has more pixels than allowed ({e})", "too_many_pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # truncated data ("image file is truncated"), broken chunks, bad headers
        raise BadInput(400, f"the image could not be decoded ({type(e).__name__}: {e}); it may be truncated "
                       f"or corrupt", "corrupt") from None
    except Exception as e:  # any other decoder failure on hostile bytes is still the client's input
        raise BadInput(400, f"the image could not be decoded ({type(e).__name__})", "corrupt") from None
