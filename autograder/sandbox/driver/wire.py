"""Plain-data wire format between the sandboxed driver and the grader.

Frames are a 4-byte big-endian length followed by UTF-8 JSON. Values are encoded as tagged
dicts; arrays travel as raw little-endian float64 or complex128 bytes in base64. Nothing here
can carry code: decoding builds only dicts, lists, strings, numbers and numpy arrays of a fixed
numeric dtype. This module is shared by both sides, so it must stay stdlib + numpy.
"""
import base64
import json
import struct

MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_ARRAY_ELEMENTS = 1_000_000
MAX_TEXT_CHARS = 20_000
MAX_ITEMS = 64

_HEADER = struct.Struct(">I")


def pack_frame(message):
    body = json.dumps(message, allow_nan=True, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        body = json.dumps({"type": "error", "error": "frame too large"}).encode("utf-8")
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Incrementally splits a byte stream into decoded frames; rejects oversized frames."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data):
        self._buffer.extend(data)
        frames = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
            if len(self._buffer) < _HEADER.size + length:
                break
            body = bytes(self._buffer[_HEADER.size:_HEADER.size + length])
            del self._buffer[:_HEADER.size + length]
            frames.append(json.loads(body.decode("utf-8")))
        return frames


def encode_array(array, numpy):
    """Encode a numeric ndarray (already converted by the caller) as a tagged dict."""
    if array.size > MAX_ARRAY_ELEMENTS:
        return {"kind": "too_large", "shape": list(array.shape), "elements": int(array.size)}
    dtype = "complex128" if array.dtype.kind == "c" else "float64"
    data = numpy.ascontiguousarray(array, dtype="<c16" if dtype == "complex128" else "<f8")
    return {
        "kind": "array",
        "dtype": dtype,
        "shape": list(array.shape),
        "data": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def decode_array(value, numpy):
    """Rebuild an array from a tagged dict, validating dtype and size against the shape."""
    dtype = {"float64": "<f8", "complex128": "<c16"}[value["dtype"]]
    shape = tuple(int(n) for n in value["shape"])
    raw = base64.b64decode(value["data"], validate=True)
    count = 1
    for n in shape:
        if n < 0:
            raise ValueError("negative dimension")
        count *= n
    if count > MAX_ARRAY_ELEMENTS or len(raw) != count * numpy.dtype(dtype).itemsize:
        raise ValueError("array data does not match its shape")
    return numpy.frombuffer(raw, dtype=dtype).reshape(shape).astype(value["dtype"])
