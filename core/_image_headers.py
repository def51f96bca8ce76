"""Which encoded image files MindSpore's C++ decoder may be given: a check of the file's structure, cheap
enough to run on every sample.

MindSpore 2.10's ``vision.Decode`` / ``RandomCropDecodeResize`` read JPEG with libjpeg and take the
process down (SIGSEGV, SIGFPE) on some malformed files, for instance a scan header naming an undefined
Huffman table, or a file whose scan header is missing; other bad files raise an error that does not name
the file. So a file goes to the C++ decoder only when its structure is one the decoder handles and its
pixels come out as Pillow's do:

- JPEG: 8-bit baseline, extended or progressive Huffman, 1 or 3 components, every marker segment well
  formed (tables defined before use, scan parameters in range) and an EOI marker near the end;
- PNG: 8 bits per sample (any colour type), every chunk's CRC right, ending in an IEND chunk;
- BMP: uncompressed 24-bit.

Everything else (16-bit PNG, CMYK or arithmetic-coded JPEG, TIFF, WebP, GIF, truncated or damaged files)
is decoded by the dataset's own Python path, which keeps its error messages and its ``on_error``.
"""
from __future__ import annotations

import zlib

import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: SOF markers of the Huffman-coded 8-bit processes libjpeg decodes and Pillow decodes the same way
_SOF_OK = (0xC0, 0xC1, 0xC2)
#: how far before the end of a JPEG file its EOI marker is looked for (some cameras append data)
_TRAILER = 4096


def cpp_decodable(data: bytes) -> bool:
    """True when MindSpore's C++ decoder can safely be given ``data`` and decodes it as Pillow would."""
    head = data[:4]
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_ok(data)
    if head == b"\x89PNG":
        return _png_ok(data)
    if head[:2] == b"BM":
        return _bmp_ok(data)
    return False


def _too_big(width: int, height: int) -> bool:
    """Above Pillow's decompression-bomb limit (twice ``Image.MAX_IMAGE_PIXELS``, where it refuses a file):
    the source then refuses it as on the Python path, rather than the C++ decoder decoding it."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return bool(limit) and width * height > 2 * limit


def _png_ok(data: bytes) -> bool:
    """8-bit samples, and every chunk whole with its CRC right, up to IEND at the end of the file."""
    if len(data) < 57 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        return False
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour, compression, filtering, interlace = data[24], data[25], data[26], data[27], data[28]
    if not (width > 0 and height > 0 and depth == 8 and colour in (0, 2, 3, 4, 6) and compression == 0
            and filtering == 0 and interlace in (0, 1) and data.endswith(_PNG_END)) or _too_big(width, height):
        return False
    pos, size, view = 8, len(data), memoryview(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length
        if end > size or zlib.crc32(view[pos + 4:pos + 8 + length]) != int.from_bytes(data[end - 4:end], "big"):
            return False
        if data[pos + 4:pos + 8] == b"IEND":
            return end == size
        pos = end
    return False


def _bmp_ok(data: bytes) -> bool:
    if len(data) < 54:
        return False
    header = int.from_bytes(data[14:18], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    bits, compression = int.from_bytes(data[28:30], "little"), int.from_bytes(data[30:34], "little")
    offset = int.from_bytes(data[10:14], "little")
    row = (width * 3 + 3) // 4 * 4
    return (header in (40, 108, 124) and width > 0 and height != 0 and bits == 24 and compression == 0
            and offset + row * abs(height) <= len(data) and not _too_big(width, abs(height)))


class _Jpeg:
    """The tables and frame seen so far while walking a JPEG's marker segments."""

    def __init__(self) -> None:
        self.frame = 0          # SOF marker, 0 before the frame header
        self.components: dict = {}   # component id -> (quantisation table, h, v sampling)
        self.quant: set = set()
        self.huffman: set = set()     # (class, id): 0 DC, 1 AC


def _jpeg_ok(data: bytes) -> bool:
    """Walk every marker segment: the header up to the first scan, then the markers between scans."""
    size = data.rfind(b"\xff\xd9", max(0, len(data) - _TRAILER)) + 2  # EOI; decoders ignore bytes after it
    if size < 128:
        return False  # no EOI near the end: truncated, so Pillow's path decides
    state = _Jpeg()
    pos, scans = 2, 0
    markers = None
    while True:
        if pos + 2 > size or data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xD9:
            return scans > 0 and pos == size - 2
        if pos + 4 > size:
            return False
        length = (data[pos + 2] << 8) | data[pos + 3]
        start, end = pos + 4, pos + 2 + length
        if length < 2 or end > size:
            return False
        if not _segment_ok(marker, data, start, end, state):
            return False
        if marker != 0xDA:
            pos = end
            continue
        scans += 1
        if markers is None:  # every marker after the first scan header, found in one vectorised pass
            markers = _markers_after(data, end, size)
        following = int(np.searchsorted(markers, end))  # the first after this scan's entropy-coded data
        if following == len(markers):
            return False
        pos = int(markers[following])


def _markers_after(data: bytes, start: int, stop: int) -> np.ndarray:
    """Positions of the markers in ``data[start:stop]``: 0xFF followed by anything but stuffing (00), RSTn or
    fill (FF). Entropy-coded data holds no other 0xFF pair, so these are the segments between scans and
    EOI, and any stray marker a damaged file holds."""
    view = np.frombuffer(data, np.uint8, count=stop - start, offset=start)
    ff = np.flatnonzero(view[:-1] == 0xFF)
    after = view[ff + 1]
    return start + ff[(after != 0) & (after != 0xFF) & ((after & 0xF8) != 0xD0)]


def _segment_ok(marker: int, data: bytes, start: int, end: int, state: _Jpeg) -> bool:
    if marker in _SOF_OK:
        return _frame_ok(marker, data, start, end, state)
    if marker == 0xC4:
        return _huffman_ok(data, start, end, state)
    if marker == 0xDB:
        return _quant_ok(data, start, end, state)
    if marker == 0xDA:
        return _scan_ok(data, start, end, state)
    if marker == 0xDD:
        return end - start == 2
    return 0xE0 <= marker <= 0xEF or marker == 0xFE  # APPn and COM are skipped; any other marker (SOF of
    # the lossless or arithmetic processes, DNL, DHP, EXP, JPGn, TEM, a stray RSTn) is not for the C++ path


def _frame_ok(marker: int, data: bytes, start: int, end: int, state: _Jpeg) -> bool:
    if state.frame or end - start < 6:
        return False
    precision = data[start]
    height, width = (data[start + 1] << 8) | data[start + 2], (data[start + 3] << 8) | data[start + 4]
    count = data[start + 5]
    if precision != 8 or height == 0 or width == 0 or count not in (1, 3) or end - start != 6 + 3 * count:
        return False
    if _too_big(width, height):
        return False
    for k in range(count):
        ident, sampling, table = data[start + 6 + 3 * k: start + 9 + 3 * k]
        if ident in state.components or not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4) or table > 3:
            return False
        if table not in state.quant:
            return False
        state.components[ident] = (table, sampling >> 4, sampling & 15)
    widest = max(h for _, h, _ in state.components.values())
    tallest = max(v for _, _, v in state.components.values())
    if any(widest % h or tallest % v for _, h, v in state.components.values()):
        return False  # fractional sampling: libjpeg refuses it
    state.frame = marker
    return True


def _huffman_ok(data: bytes, start: int, end: int, state: _Jpeg) -> bool:
    pos = start
    while pos < end:
        if pos + 17 > end:
            return False
        kind, ident = data[pos] >> 4, data[pos] & 15
        if kind > 1 or ident > 3:
            return False
        total = sum(data[pos + 1: pos + 17])
        if pos + 17 + total > end or not _table_ok(data[pos: pos + 17 + total]):
            return False
        state.huffman.add((kind, ident))
        pos += 17 + total
    return pos == end


_TABLES_SEEN: dict = {}  # table bytes -> verdict: files of one encoder share their tables


def _table_ok(table: bytes) -> bool:
    """A Huffman table libjpeg accepts: 1..256 codes, canonical (no length overflows), DC symbols 0..15."""
    verdict = _TABLES_SEEN.get(table)
    if verdict is None:
        counts, total = table[1:17], sum(table[1:17])
        verdict, code = 0 < total <= 256, 0
        for length, count in enumerate(counts, start=1):
            code += count
            if code >= (1 << length):
                verdict = False
            code <<= 1
        if table[0] >> 4 == 0 and total and max(table[17:]) > 15:
            verdict = False  # a DC symbol is a bit count (libjpeg refuses more than 15)
        if len(_TABLES_SEEN) < 4096:
            _TABLES_SEEN[table] = verdict
    return verdict


def _quant_ok(data: bytes, start: int, end: int, state: _Jpeg) -> bool:
    pos = start
    while pos < end:
        precision, ident = data[pos] >> 4, data[pos] & 15
        if precision > 1 or ident > 3:
            return False
        pos += 1 + 64 * (precision + 1)
        state.quant.add(ident)
    return pos == end


def _scan_ok(data: bytes, start: int, end: int, state: _Jpeg) -> bool:
    if not state.frame or end - start < 4:
        return False
    count = data[start]
    if not 1 <= count <= 4 or end - start != 4 + 2 * count:
        return False
    progressive = state.frame == 0xC2
    first, last, approx = data[end - 3], data[end - 2], data[end - 1]
    high, low = approx >> 4, approx & 15
    if progressive:
        if last < first or last > 63 or high > 13 or low > 13 or (first == 0) != (last == 0):
            return False
        if first > 0 and count != 1:
            return False
    seen = set()
    for k in range(count):
        ident, tables = data[start + 1 + 2 * k], data[start + 2 + 2 * k]
        if ident not in state.components or ident in seen:
            return False
        seen.add(ident)
        dc, ac = tables >> 4, tables & 15
        needs_dc = not progressive or (first == 0 and high == 0)  # a DC refinement scan reads no table
        needs_ac = not progressive or first > 0
        if (needs_dc and (0, dc) not in state.huffman) or (needs_ac and (1, ac) not in state.huffman):
            return False  # an undefined table: libjpeg crashes on some, Pillow substitutes standard ones
    return True
