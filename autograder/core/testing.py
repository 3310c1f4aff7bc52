"""Build `Submission` objects from Python values, for unit tests of hidden checks.

The values go through the same encoder the sandboxed driver uses, so a check sees exactly what
it would see after a real sandboxed run.
"""

from autograder.core.submission import Submission
from autograder.sandbox.driver import wire


def make_submission(values, calls=None, submission_id="synthetic"):
    """`values`: name -> Python value; `calls`: function name -> list of (args, result_or_exception)."""
    encoded = {name: wire.encode_value(value) for name, value in values.items()}
    call_records = {}
    for name, records in (calls or {}).items():
        encoded.setdefault(name, {"kind": "callable", "type": "function"})
        call_records[name] = [
            {"args": tuple(args), "error": f"{type(result).__name__}: {result}"}
            if isinstance(result, BaseException)
            else {"args": tuple(args), "result": wire.encode_value(result)}
            for args, result in records
        ]
    return Submission(submission_id, encoded, call_records)


def call_function(function, probes, rng):
    """Call `function` on the inputs `probes(rng)` draws, as the grader would: (args, result) pairs."""
    records = []
    for args in probes(rng):
        try:
            records.append((args, function(*args)))
        except Exception as error:  # noqa: BLE001 - recorded like the driver records it
            records.append((args, error))
    return records
