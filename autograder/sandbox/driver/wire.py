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
# Caps the supervisor checks on a frame's length header BEFORE reading or parsing its body.
# One value: the largest array (1M float64 elements, base64) plus its small fields.
MAX_VALUE_BYTES = 4 * ((MAX_ARRAY_ELEMENTS * 8 + 2) // 3) + 4096
MAX_SMALL_FRAME_BYTES = 8192  # cell, cell_done, ended, done, grader_error
MAX_DIMENSIONS = 32

_HEADER = struct.Struct(">I")


def pack_frame(message):
    body = json.dumps(message, allow_nan=True, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        body = json.dumps({"type": "error", "error": "frame too large"}).encode("utf-8")
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Incrementally splits a byte stream into decoded frames; rejects oversized frames."""

    def __init__(self, max_frame_bytes=MAX_FRAME_BYTES):
        self._buffer = bytearray()
        # An int, or a callable giving the cap for the next frame (the protocol's position
        # decides how large the next frame may be); checked on the header, before the body.
        self.max_frame_bytes = max_frame_bytes

    def feed(self, data):
        self._buffer.extend(data)
        frames = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            cap = self.max_frame_bytes() if callable(self.max_frame_bytes) else self.max_frame_bytes
            if length > cap:
                raise ValueError(f"frame of {length} bytes exceeds the {cap}-byte limit")
            if len(self._buffer) < _HEADER.size + length:
                break
            body = bytes(self._buffer[_HEADER.size : _HEADER.size + length])
            del self._buffer[: _HEADER.size + length]
            frames.append(json.loads(body.decode("utf-8")))
        return frames


def encode_array(array, numpy):
    """Encode a numeric ndarray (already converted by the caller) as a tagged dict."""
    # Capped in bytes (a complex element is two floats), so that one value fits MAX_VALUE_BYTES.
    if array.size > (MAX_ARRAY_ELEMENTS // 2 if array.dtype.kind == "c" else MAX_ARRAY_ELEMENTS):
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


# -- what the relay lets through ---------------------------------------------------------------
# The relay rebuilds every value from these fields only, with these types and lengths, so the
# frames the supervisor parses have a fixed shape whatever the student half wrote.
_MALFORMED = {"kind": "object", "type": "?", "reason": "the value could not be read"}


def _text(value, limit):
    return value[:limit] if isinstance(value, str) else None


def _finite_or_name(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return value if value in ("nan", "inf", "-inf") else None


def clean_value(value):
    """A value frame entry rebuilt from known fields, or a 'could not be read' object."""
    if not isinstance(value, dict):
        return dict(_MALFORMED)
    kind = value.get("kind")
    if kind in ("none", "missing"):
        return {"kind": kind}
    if kind == "bool" and isinstance(value.get("value"), bool):
        return {"kind": "bool", "value": value["value"]}
    if kind == "number":
        number = _finite_or_name(value.get("value"))
        if number is not None:
            return {"kind": "number", "value": number, "integer": value.get("integer") is True}
    if kind == "complex_number":
        real, imag = _finite_or_name(value.get("real")), _finite_or_name(value.get("imag"))
        if isinstance(real, float) and isinstance(imag, float):
            return {"kind": kind, "real": real, "imag": imag}
    if kind == "str" and isinstance(value.get("value"), str):
        return {"kind": "str", "value": value["value"][:MAX_TEXT_CHARS]}
    if kind == "strs" and isinstance(value.get("items"), list):
        items = value["items"][:MAX_ITEMS]
        if all(isinstance(item, str) for item in items):
            return {"kind": "strs", "items": [item[:200] for item in items]}
    if kind in ("callable", "object"):
        cleaned = {"kind": kind, "type": _text(value.get("type"), 200) or "?"}
        for field in ("reason", "dtype"):
            if isinstance(value.get(field), str):
                cleaned[field] = value[field][:300]
        return cleaned
    shape = value.get("shape")
    if (
        kind in ("array", "too_large")
        and isinstance(shape, list)
        and len(shape) <= MAX_DIMENSIONS
        and all(type(n) is int and 0 <= n < 1 << 40 for n in shape)
    ):
        if kind == "too_large" and type(value.get("elements")) is int:
            return {"kind": kind, "shape": list(shape), "elements": value["elements"]}
        data = value.get("data")
        if (
            kind == "array"
            and value.get("dtype") in ("float64", "complex128")
            and isinstance(data, str)
            and len(data) <= MAX_VALUE_BYTES - 4096
        ):
            return {"kind": kind, "dtype": value["dtype"], "shape": list(shape), "data": data}
    return dict(_MALFORMED)


def clean_values(values, names):
    """{name: value} for the names the grader asked for only."""
    if not isinstance(values, dict):
        return {}
    return {name: clean_value(values[name]) for name in names if name in values}


def clean_calls(calls, requested):
    """{function: [record, ...]} for the calls the grader requested only, as many as it asked."""
    if not isinstance(calls, dict):
        return {}
    cleaned = {}
    for name, count in requested.items():
        records = calls.get(name)
        if not isinstance(records, list):
            continue
        kept = []
        for record in records[:count]:
            if isinstance(record, dict) and "result" in record:
                kept.append({"result": clean_value(record["result"])})
            elif isinstance(record, dict) and isinstance(record.get("error"), str):
                kept.append({"error": record["error"][:1000]})
            else:
                kept.append({"error": "the call's result could not be read"})
        cleaned[name] = kept
    return cleaned
