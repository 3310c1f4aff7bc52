"""Plain-data wire format between the sandboxed driver and the grader.

Frames are a 4-byte big-endian length followed by UTF-8 JSON. Values are encoded as tagged
dicts (encode_value); arrays travel as raw little-endian float64 or complex128 bytes in base64.
Nothing here can carry code: decoding builds only dicts, lists, strings, numbers and numpy
arrays of a fixed numeric dtype. This module is shared by both sides (the grader imports it,
never the driver), so it must stay stdlib + numpy.

In the sandbox it is imported before any student code runs: the builtins and numpy functions
encode_value uses are bound then, so a submission that patches them spoils only its own report.
"""

import base64
import json
import math
import struct
import sys
import traceback

import numpy

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


# -- values as tagged dicts ---------------------------------------------------------------------
_np_asarray = numpy.asarray
_np_ndarray = numpy.ndarray
_isinstance = isinstance
_callable = callable
_str = str
_type = type
_len = len
_exc_info = sys.exc_info


def _short(text, limit=300):
    text = _str(text)
    return text if _len(text) <= limit else text[: limit - 3] + "..."


def describe_exception(error):
    """'Type: message (line N)' for a student exception, without grader frames."""
    name = _type(error).__name__
    line = ""
    if _isinstance(error, SyntaxError):
        line = f" (line {error.lineno})" if error.lineno else ""
    else:
        tb = traceback.extract_tb(_exc_info()[2])
        cell_frames = [frame for frame in tb if frame.filename.startswith("<cell")]
        if cell_frames:
            line = f" (line {cell_frames[-1].lineno})"
    text = _str(error)
    return _short(f"{name}: {text}{line}" if text else f"{name}{line}")


def encode_value(value):
    """A tagged, plain-data description of one value (a student's, or a probe call's argument)."""
    if value is None:
        return {"kind": "none"}
    if _isinstance(value, bool) or _isinstance(value, numpy.bool_):
        return {"kind": "bool", "value": bool(value)}
    if _isinstance(value, (int, float, numpy.integer, numpy.floating)):
        number = float(value)
        return {
            "kind": "number",
            "value": number if math.isfinite(number) else _str(number),
            "integer": _isinstance(value, (int, numpy.integer)),
        }
    if _isinstance(value, (complex, numpy.complexfloating)):
        return {"kind": "complex_number", "real": float(value.real), "imag": float(value.imag)}
    if _isinstance(value, str):
        return {"kind": "str", "value": value[:MAX_TEXT_CHARS]}
    if (
        _isinstance(value, (set, frozenset, list, tuple))
        and value
        and all(_isinstance(item, str) for item in list(value)[: MAX_ITEMS + 1])
    ):
        items = sorted(value) if _isinstance(value, (set, frozenset)) else list(value)
        return {"kind": "strs", "items": [item[:200] for item in items[:MAX_ITEMS]]}
    if _callable(value) and not _isinstance(value, _np_ndarray):
        return {"kind": "callable", "type": _type(value).__name__}
    try:
        array = _np_asarray(value)
    except BaseException as error:  # noqa: BLE001 - student objects may raise anything
        return {"kind": "object", "type": _type(value).__name__, "reason": describe_exception(error)}
    if not _isinstance(array, _np_ndarray):
        return {"kind": "object", "type": _type(value).__name__}
    if array.dtype.kind in "biuf":
        if array.ndim == 0:
            return encode_value(array.item())
        return encode_array(array.astype(numpy.float64), numpy)
    if array.dtype.kind == "c":
        return encode_array(array.astype(numpy.complex128), numpy)
    return {"kind": "object", "type": _type(value).__name__, "dtype": _str(array.dtype)}


def decode_argument(encoded):
    """A probe call's argument from its tagged dict (the inverse of encode_value for arguments)."""
    if encoded.get("kind") == "array":
        return decode_array(encoded, numpy)
    if encoded.get("kind") == "number":
        value = encoded["value"]
        return int(value) if encoded.get("integer") else float(value)
    return encoded.get("value")


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
