"""The grader's threat model, one test per threat, on the mini course.

Student code is untrusted. It runs isolated, with time and memory limits, and decides nothing:
the grader extracts plain data and makes every decision in its own process. Nothing a
submission does may change another submission's grade, read hidden tests or reference
solutions, write the gradebook, or run code in the grader.

The mini course's checks: W is the 2x2 identity (2 points), double(x) returns 2x on inputs the
grader draws (1 point), k == 3 (1 point). Cheating attempts submit WRONG values (W = 5 * eye)
and the tests assert the score stays what those values earn; escape attempts are written so
that success would RAISE the score (or are run directly with `sandbox.run_submission`, which
returns whatever the code recorded in `result`).

Isolation tiers (every test that applies to a tier runs once per tier this machine provides;
tests/sandbox/test_isolation.py forces tiers by taking tools away and repeats the core as non-root):
  * "bubblewrap" and "landlock" (the strong tiers) must also keep the course, the gradebook,
    other submissions, the network and the grader's processes out of reach.
  * "unisolated" is for self-checks on machines without either and is weaker by design: student
    code runs as the grader's user, so it CAN read and write that user's files, reach the
    network and signal (as root, ptrace) the grader's processes, and without a writable cgroup
    a daemon that leaves the session survives. Those are documented, not tested (testing them
    would mean attacking the machine running the tests). What it does guarantee is tested:
    the driver decides nothing, time limits and kills, a scrubbed environment, `python -I` in
    a fresh temporary directory that is removed afterwards, resource limits, and (with a
    cgroup) no leftovers.
The driver is split in two: a relay that alone holds the grader's channel and never runs
student code, and a forked student half. Student code can write frames into its own pipe to
the relay (that is how its values travel anyway), which gains nothing: a forged value is just a
submitted value, and function results are checked on inputs drawn after the cells ran. Tested:
student code cannot reach the grader's channel itself (unisolated as root it could ptrace
the relay, documented), and neither malformed frames through the relay nor a compromised relay
can crash or stall the grader.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import signal
import socket
import threading
import time
import tracemalloc
import uuid

import pytest

from autograder.core import engine
from autograder.core.submission import decode_value
from autograder.dev import classroom
from autograder.sandbox import supervisor as sandbox
from autograder.sandbox import tiers
from autograder.sandbox.cgroups import Cgroups
from tests.builders.sandbox import LIMITS, is_warm
from tests.builders.sandbox import parametrize_starts as pytest_generate_tests  # noqa: F401 - each test once per start

pytestmark = pytest.mark.usefixtures("sandbox_start")  # fresh, or warm where a test runs per start

# String conditions are evaluated when a test runs, not at collection: collecting the suite
# starts no sandbox and makes no cgroup.
requires_bwrap = pytest.mark.skipif("not sandbox.bubblewrap_available()", reason="bubblewrap cannot run here")
BWRAP = pytest.param("bubblewrap", marks=requires_bwrap)
LANDLOCK = pytest.param(
    "landlock",
    marks=pytest.mark.skipif(
        "sandbox.probe_landlock() is not None", reason="the landlock tier cannot run here (sandbox.probe_landlock())"
    ),
)
STRONG = [BWRAP, LANDLOCK]  # the tiers instructor grading accepts without --allow-unisolated
BOTH = [*STRONG, "unisolated"]  # every tier

W_WRONG = "W = 5 * np.eye(2)\n"  # earns 0 of W's 2 points; double and k stay right: 2 points in all
FUNCTION_OK = "def double(x):\n    return 2 * x\n\nk = 3\n"


# -- helpers ---------------------------------------------------------------------------------
@functools.cache
def _pids_cgroup_works() -> bool:
    probe = Cgroups(sandbox.Limits())
    works = probe.caps("pids")
    probe.kill_and_remove()
    return works


def memory_cgroup_binds() -> bool:
    """Whether a memory cgroup caps a run here (as root with cgroups): a hog is then killed as a
    whole. Without one, RLIMIT_AS binds the process, and the hog's cell ends in a MemoryError."""
    probe = Cgroups(sandbox.Limits())
    try:
        return probe.caps("memory")
    finally:
        probe.kill_and_remove()


def single_process(isolation) -> bool:
    """Whether the student half may start no process at all here (see tiers.single_process;
    a warm interpreter's child is always one process)."""
    if is_warm(isolation):
        return True
    probe = Cgroups(sandbox.Limits())
    try:
        return tiers.single_process(isolation, probe)
    finally:
        probe.kill_and_remove()


def contained(isolation):
    """Whether a fork bomb is bounded here: by the pids cgroup, by RLIMIT_NPROC inside
    bubblewrap's user namespace, and in the landlock tier by the seccomp rule that allows the
    student half no new process; the unisolated tier contains it only with a pids cgroup."""
    return isolation in ("bubblewrap", "landlock") or _pids_cgroup_works()


def notebook(mini_course, replacements=None, blank=False, mutate=None) -> dict:
    nb = classroom.filled_notebook(mini_course, "mini", "mini", replacements, blank=blank)
    if mutate:
        mutate(nb)
    return nb


def cheat(mini_course, attack: str, function: str = FUNCTION_OK) -> dict:
    """W = 5 * eye, then `attack` in the same answer cell; double and k correct (earns 2)."""
    return notebook(
        mini_course, {"mini_matrix_answer": "import numpy as np\n" + W_WRONG + attack, "mini_function_answer": function}
    )


def grade(course, tmp_path, notebooks: dict, isolation="auto", limits=LIMITS, names=None) -> dict[str, engine.Report]:
    """Grade {submission id: notebook (dict, or raw str/bytes)} in ONE engine.grade call."""
    requests = []
    for submission_id, content in notebooks.items():
        folder = tmp_path / "submitted" / submission_id
        folder.mkdir(parents=True)
        path = folder / ((names or {}).get(submission_id, "mini.ipynb"))
        if isinstance(content, dict):
            path.write_text(json.dumps(content))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        requests.append(engine.GradeRequest(str(path), submission_id))
    reports = engine.grade(course, requests, jobs=2, limits=limits, isolation=isolation, allow_unisolated=True)
    for report in reports:
        if report.isolation is not None and report.grader_error is None:
            assert_started_as_asked(report.isolation, report.isolation_details)
    return {report.submission_id: report for report in reports}


def assert_started_as_asked(isolation, details):
    """The run went to a warm interpreter's child exactly when this test's start asks for one."""
    warm_child = details.get("interpreter", "").startswith("warm")
    assert warm_child == is_warm(isolation), details


def run_code(mini_course, cells, isolation, names=("result",), limits=LIMITS):
    """Run code cells in the sandbox; returns (RunResult, {name: decoded value})."""
    if isinstance(cells, str):
        cells = [cells]
    result = sandbox.run_submission(
        list(enumerate(cells)),
        list(names),
        str(mini_course.release / "mini"),
        lambda values: {},
        limits,
        isolation,
    )
    values = {name: decode_value(result.values.get(name, {"kind": "missing"})) for name in names}
    if result.grader_error is None:
        assert_started_as_asked(result.isolation, result.details)
    return result, values


def checks(report) -> dict:
    return {check.id: check for check in report.checks}


def assert_full_marks(report):
    assert report.error is None, report.error
    assert (report.score, report.max_score) == (4.0, 4.0), [(c.id, c.message) for c in report.checks]


def marker_processes(marker: str) -> list[int]:
    """Live processes (zombies have no cmdline) whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def wait_gone(marker: str, seconds: float = 3.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := marker_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_leftovers(marker: str) -> None:
    for pid in marker_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# Student-side helper for writing raw frames into the student half's own pipe to the relay
# (the driver's trusted half, which alone talks to the grader; see driver.py).
FORGE = """
import json, os, struct, sys
def frame(message):
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body
channel = sys.modules["__main__"]._channels["result"]
"""


def fork_bomb_code(marker: str, seconds: float) -> str:
    bomb = (
        "import os, time\\nwhile True:\\n    try:\\n        os.fork()\\n"
        "    except OSError:\\n        time.sleep(0.01)\\n"
    )
    return (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', '{bomb}', '{marker}'])\n"
        f"time.sleep({seconds})\n"
    )


# -- the driver decides nothing: monkeypatching ----------------------------------------------
@pytest.mark.parametrize("isolation", BOTH)
def test_patching_numpy_comparisons_gains_nothing(tmp_path, mini_course, isolation):
    attack = """
np.allclose = lambda *args, **kwargs: True
np.isclose = lambda a, b, *args, **kwargs: np.ones(np.shape(a), dtype=bool)
np.array_equal = np.array_equiv = lambda *args, **kwargs: True
np.testing.assert_allclose = np.testing.assert_array_equal = lambda *args, **kwargs: None
np.linalg.norm = lambda *args, **kwargs: 0.0
np.abs = np.absolute = lambda x, *args, **kwargs: np.zeros_like(x)
np.max = np.amax = lambda *args, **kwargs: 0.0
np.eye = lambda n, *args, **kwargs: 5 * np.identity(n)   # "the identity" is now W
try:
    np.ndarray.__eq__ = lambda self, other: True
except TypeError:
    pass
"""
    report = grade(mini_course, tmp_path, {"cheat": cheat(mini_course, attack)}, isolation)["cheat"]
    assert report.score == 2.0 and not checks(report)["w_is_identity"].passed


@pytest.mark.parametrize("isolation", BOTH)
def test_patching_builtins_gains_nothing(tmp_path, mini_course, isolation):
    comparisons = """
import builtins
builtins.abs = lambda x: 0
builtins.all = lambda iterable: True
builtins.any = lambda iterable: False
builtins.max = builtins.min = lambda *args, **kwargs: 0
builtins.round = lambda x, *args: 3
builtins.sum = lambda *args, **kwargs: 0
builtins.AssertionError = type("NeverRaised", (Exception,), {})
"""
    # These break the standard library the driver itself uses: the submission spoils its own
    # report (documented in driver.py) and still gains nothing.
    type_checks = "import builtins\nbuiltins.isinstance = builtins.issubclass = lambda *args: True\n"
    wrong_k = "def double(x):\n    return 2 * x\n\nk = 7\n"
    reports = grade(
        mini_course,
        tmp_path,
        {
            "comparisons": cheat(mini_course, comparisons, wrong_k),
            "type_checks": cheat(mini_course, type_checks, wrong_k),
        },
        isolation,
    )
    assert reports["comparisons"].score == 1.0  # only double(x), which is right
    assert not checks(reports["comparisons"])["w_is_identity"].passed
    assert not checks(reports["comparisons"])["k_is_three"].passed
    assert reports["type_checks"].score <= 1.0


@pytest.mark.parametrize("isolation", BOTH)
def test_patching_ipython_gains_nothing(tmp_path, mini_course, isolation):
    """Input/AST transformers, hooks, custom exception handlers, displayhook: stock nbgrader runs
    hidden tests in the student's kernel, where these defeat them; here no test runs there."""
    attack = """
import sys
ip = get_ipython()
rewrite = lambda lines: [line.replace("5 * np.eye", "np.eye") for line in lines]
attempts = [
    lambda: ip.input_transformers_cleanup.append(rewrite),
    lambda: ip.input_transformers_post.append(rewrite),
    lambda: ip.ast_transformers.append(object()),
    lambda: ip.events.register("post_run_cell", lambda *args: None),
    lambda: ip.set_custom_exc((BaseException,), lambda *args, **kwargs: None),
    lambda: ip.set_hook("pre_run_code_hook", lambda *args: None),
    lambda: setattr(ip, "showtraceback", lambda *args, **kwargs: None),
    lambda: setattr(ip, "run_cell", lambda *args, **kwargs: None),
    lambda: ip.run_line_magic("load_ext", "autoreload"),
    lambda: ip.run_cell("W = np.eye(2)"),
]
for attempt in attempts:
    try:
        attempt()
    except Exception:
        pass
sys.displayhook = lambda value: None
sys.excepthook = lambda *args: None
"""
    report = grade(mini_course, tmp_path, {"cheat": cheat(mini_course, attack)}, isolation)["cheat"]
    assert report.score == 2.0 and not checks(report)["w_is_identity"].passed


@pytest.mark.parametrize("isolation", BOTH)
def test_our_own_modules_are_out_of_reach(mini_course, isolation):
    """The grader's package cannot be imported in the sandbox; the driver's code can be patched
    there, but that only changes what the submission reports about itself."""
    _, values = run_code(
        mini_course,
        """
result = []
for name in ("autograder", "autograder.checks", "autograder.runner", "autograder.engine"):
    try:
        __import__(name)
        result.append(name)
    except ImportError:
        pass
result = result or "none"
""",
        isolation,
    )
    assert values["result"] == "none"


@pytest.mark.parametrize("isolation", BOTH)
def test_patching_the_driver_to_claim_a_pass_gains_nothing(tmp_path, mini_course, isolation):
    attack = """
import sys
driver = sys.modules["__main__"]
real_send = driver.send
driver.send = lambda message: real_send({**message, "score": 4, "passed": True, "points": 4})
driver.describe_exception = lambda error: "passed"
"""
    report = grade(mini_course, tmp_path, {"cheat": cheat(mini_course, attack)}, isolation)["cheat"]
    assert report.score == 2.0 and not checks(report)["w_is_identity"].passed


GRADER_CHANNEL_ATTACK = """
import json, os, stat, struct, sys
def frame(message):
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body
forged = frame({"type": "values", "defined_in": {},
                "values": {"W": {"kind": "array", "dtype": "float64", "shape": [2, 2],
                                 "data": "AAAAAAAA8D8AAAAAAAAAAAAAAAAAAAAAAAAAAAAA8D8="},
                           "k": {"kind": "number", "value": 3, "integer": True}}}) + frame({"type": "done"})
own = set(sys.modules["__main__"]._channels.values())  # this process's pipes to the relay
supervisor = [int(fd) for fd in sys.argv[1:3]]
for fd in set(supervisor) | set(range(3, 256)):
    try:
        if fd not in own and stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, forged)
    except OSError:
        pass
for fd in supervisor:  # reopen the relay's ends through /proc
    try:
        reopened = os.open(f"/proc/{os.getppid()}/fd/{fd}", os.O_WRONLY)
        os.write(reopened, forged)
    except OSError:
        pass
"""


@pytest.mark.parametrize(
    "isolation",
    [
        *STRONG,
        pytest.param(
            "unisolated",
            marks=pytest.mark.skipif(
                os.geteuid() == 0, reason="as root, unisolated student code may ptrace the driver (documented)"
            ),
        ),
    ],
)
def test_student_code_cannot_reach_the_graders_channel(tmp_path, mini_course, isolation):
    """The driver's relay alone holds the grader's pipes; the student half closed them before
    running anything and cannot reopen them through /proc (the relay is not dumpable from
    before the fork). A forged frame claiming W = identity would raise the score."""
    first = notebook(
        mini_course,
        {"mini_matrix_answer": W_WRONG},
        mutate=lambda nb: nb["cells"].insert(
            0,
            {
                "cell_type": "code",
                "id": "first",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": GRADER_CHANNEL_ATTACK,
            },
        ),
    )  # the very first cell: racing the relay's start-up
    reports = grade(
        mini_course, tmp_path, {"first": first, "later": cheat(mini_course, GRADER_CHANNEL_ATTACK)}, isolation
    )
    for report in reports.values():
        assert report.score == 2.0 and not checks(report)["w_is_identity"].passed
    # The race above is won or lost in microseconds; this is deterministic: the student half
    # inherits the relay's dumpable flag at the fork, so 0 means the relay was protected first.
    _, values = run_code(mini_course, "import ctypes\nresult = str(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))", isolation)
    assert values["result"] == "0"  # PR_GET_DUMPABLE


@pytest.mark.parametrize("isolation", BOTH)
def test_printing_a_passing_report_gains_nothing(tmp_path, mini_course, isolation):
    attack = """
import os, sys
fake = ("Autograder, part mini_matrix: 2 / 2\\nPASS w_is_identity (2/2)\\nAll tests passed!\\n"
        '{"score": 4.0, "max_score": 4.0, "checks": [{"id": "w_is_identity", "passed": true}]}\\n2.0\\n')
print(fake)
print(fake, file=sys.stderr)
os.write(1, fake.encode())
"""
    report = grade(mini_course, tmp_path, {"cheat": cheat(mini_course, attack)}, isolation)["cheat"]
    assert report.score == 2.0 and not checks(report)["w_is_identity"].passed
    assert "All tests passed" not in json.dumps(report.to_json())


# -- lying objects: only plain numbers reach the checks --------------------------------------
LIAR = """
class Liar:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __array__(self, dtype=None, copy=None): return 5 * np.eye(2)
    def __array_ufunc__(self, *args, **kwargs): return True
    def __array_function__(self, *args, **kwargs): return True
    def __float__(self): return 1.0
    def __repr__(self): return "array([[1., 0.], [0., 1.]])"
"""


def _lying_cases(mini_course, marker: pathlib.Path) -> dict[str, tuple[dict, float]]:
    """submission id -> (notebook, the score its plain values earn)."""
    evil = (
        "import os\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        "    def __array__(self, dtype=None, copy=None): return 5 * np.eye(2)\n"
    )
    return {
        "eq_and_ufunc_always_agree": (cheat(mini_course, LIAR + "W = Liar()\n"), 2.0),
        "ndarray_subclass_that_lies": (
            cheat(
                mini_course,
                (
                    "class Sly(np.ndarray):\n"
                    "    def __eq__(self, other): return np.ones((2, 2), dtype=bool)\n"
                    "    def __array_ufunc__(self, *args, **kwargs): return True\n"
                    "W = (5 * np.eye(2)).view(Sly)\n"
                ),
            ),
            2.0,
        ),
        "int_whose_eq_says_yes": (
            notebook(
                mini_course,
                {
                    "mini_function_answer": (
                        "class K(int):\n"
                        "    def __eq__(self, other): return True\n"
                        "    __hash__ = int.__hash__\n"
                        "def double(x):\n    return 2 * x\n\nk = K(7)\n"
                    )
                },
            ),
            3.0,
        ),
        "function_returns_a_liar": (
            notebook(
                mini_course,
                {
                    "mini_function_answer": (
                        "import numpy as np\n" + LIAR + "def double(x):\n    return Liar()\n\nk = 3\n"
                    )
                },
            ),
            3.0,
        ),
        "reduce_would_run_code_if_unpickled": (
            notebook(
                mini_course,
                {
                    "mini_matrix_answer": "import numpy as np\n" + evil + "W = Evil()\n",
                    "mini_function_answer": "def double(x):\n    return Evil()\n\nk = 3\n",
                },
            ),
            1.0,
        ),
        "array_conversion_raises": (
            cheat(
                mini_course,
                (
                    "class Broken:\n"
                    "    def __array__(self, dtype=None, copy=None): raise RuntimeError('no array today')\n"
                    "W = Broken()\n"
                ),
            ),
            2.0,
        ),
        "array_conversion_never_ends": (
            cheat(
                mini_course,
                (
                    "class Slow:\n"
                    "    def __array__(self, dtype=None, copy=None):\n"
                    "        while True: pass\n"
                    "W = Slow()\n"
                ),
            ),
            2.0,
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
def test_lying_objects_earn_only_their_plain_values(tmp_path, mini_course, isolation):
    marker = tmp_path / "unpickled"
    cases = _lying_cases(mini_course, marker)
    reports = grade(mini_course, tmp_path, {name: nb for name, (nb, _) in cases.items()}, isolation)
    assert {name: reports[name].score for name in cases} == {name: earned for name, (_, earned) in cases.items()}
    assert not marker.exists(), "the grader unpickled something a submission produced"
    assert "no array today" in checks(reports["array_conversion_raises"])["w_is_identity"].message


@pytest.mark.parametrize(
    "code, message",
    [
        ("W = np.zeros((0, 2, 2))", "should have shape (2, 2)"),  # would broadcast to "all close"
        ("W = 1.0", "should have shape (2, 2)"),
        ("W = np.full((2, 2), np.nan)", "NaN or infinite"),
        ("W = np.full((2, 2), np.inf)", "NaN or infinite"),
        ("W = np.zeros((2000, 2000))", "far too large"),
        ("W = np.ma.masked_array(5 * np.eye(2), mask=~np.eye(2, dtype=bool))", "differs from the identity"),
    ],
)
def test_values_that_match_anything_are_refused(tmp_path, mini_course, code, message):
    report = grade(
        mini_course, tmp_path, {"s": notebook(mini_course, {"mini_matrix_answer": "import numpy as np\n" + code})}
    )["s"]
    assert report.score == 2.0 and message in checks(report)["w_is_identity"].message


# -- reading what students must never see ----------------------------------------------------
def _secret_paths(tmp_path, mini_course) -> dict[str, pathlib.Path]:
    import autograder

    grader = pathlib.Path(autograder.__file__).resolve().parent
    other = tmp_path / "submitted" / "other" / "mini.ipynb"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text(json.dumps(notebook(mini_course)))
    gradebook = tmp_path / "gradebook.db"
    gradebook.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    return {
        "hidden checks": grader / "assignments",
        "mini hidden checks": mini_course.grading / "mini" / "test_mini.py",
        "grader code": grader / "core" / "engine.py",
        "source notebook": mini_course.source / "mini" / "mini.ipynb",
        "reference solutions": mini_course.solutions / "mini",
        "course solutions": grader.parent / "solutions",
        "gradebook": gradebook,
        "other student's work": other,
        "grader's home": pathlib.Path.home(),
        "shadow passwords": pathlib.Path("/etc/shadow"),
    }


READ_ATTEMPT = """
import os
def readable(path):
    try:
        if os.path.isdir(path):  # entries other than the way to the Python install, mounted read-only
            return any(not any(root.startswith(os.path.join(path, entry)) for root in PYTHON_ROOTS)
                       for entry in os.listdir(path))
        with open(path, "rb") as handle:
            return bool(handle.read(1))
    except OSError:
        return False
result = [name for name, path in PATHS.items() if readable(path)] or "nothing"
"""


@pytest.mark.parametrize("isolation", STRONG)
def test_strong_tiers_cannot_read_course_gradebook_or_other_work(tmp_path, mini_course, isolation):
    paths = {name: str(path) for name, path in _secret_paths(tmp_path, mini_course).items()}
    code = f"PATHS = {paths!r}\nPYTHON_ROOTS = {tiers.python_roots()!r}\n" + READ_ATTEMPT
    _, values = run_code(mini_course, code, isolation)
    assert values["result"] == "nothing"


@pytest.mark.parametrize("isolation", STRONG)
def test_strong_tiers_cannot_copy_answers_from_a_neighbour_or_the_solutions(tmp_path, mini_course, isolation):
    """Escape attempts whose success would raise the score: copy W from any readable source
    notebook, solution or other submission (graded in the same call, so running concurrently)."""
    secret = {name: str(path) for name, path in _secret_paths(tmp_path, mini_course).items()}
    attack = f"""
import glob, json, os, re
candidates = [p for p in {list(secret.values())!r} if p.endswith(".ipynb")]
candidates += glob.glob("/tmp/**/*.ipynb", recursive=True) + glob.glob("/proc/*/cwd/**/*.ipynb", recursive=True)
candidates += glob.glob({str(tmp_path)!r} + "/**/*.ipynb", recursive=True)
for path in candidates:
    try:
        cells = json.load(open(path))["cells"]
    except Exception:
        continue
    for cell in cells:
        match = re.search(r"^W = .*$", "".join(cell["source"]), re.M)
        if match and "5 *" not in match.group(0):
            exec(match.group(0))
"""
    reports = grade(
        mini_course, tmp_path, {"honest": notebook(mini_course), "copier": cheat(mini_course, attack)}, isolation
    )
    assert_full_marks(reports["honest"])
    assert reports["copier"].score == 2.0


@pytest.mark.parametrize("isolation", STRONG)
def test_strong_tiers_hides_the_grader_processes_and_their_environment(mini_course, monkeypatch, isolation):
    secret = f"tc-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("TC_THREAT_SECRET", secret)
    with open("/proc/self/cmdline", "rb") as handle:
        grader_cmdline = handle.read().decode(errors="replace")
    _, values = run_code(
        mini_course,
        f"""
import os
try:
    pids = [pid for pid in os.listdir("/proc") if pid.isdigit()]
except OSError:  # landlock: /proc is not readable at all
    pids = [str(os.getpid()), str(os.getppid()), "1"]
seen = []
for pid in pids:
    for name in ("environ", "cmdline"):
        try:
            seen.append(open(f"/proc/{{pid}}/{{name}}", "rb").read().decode(errors="replace"))
        except OSError:
            pass
result = ["secret" for text in seen if {secret!r} in text] + ["grader" for text in seen if text == {grader_cmdline!r}]
result = result + (["many processes"] if len(pids) > 4 else [])
result = result or "nothing"
""",
        isolation,
    )
    assert values["result"] == "nothing"


@pytest.mark.parametrize("isolation", BOTH)
def test_environment_is_scrubbed_and_grader_variables_reveal_nothing(tmp_path, mini_course, isolation, monkeypatch):
    """Code that cheats only when it sees a grader-ish variable gains nothing: it never sees one."""
    for name, value in {
        "NBGRADER_EXECUTION": "autograde",
        "NBGRADER_VALIDATING": "1",
        "CI": "true",
        "GRADER": "1",
        "AUTOGRADER": "1",
        "JUPYTERHUB_API_TOKEN": "tc-secret-token",
        "PGPASSWORD": "tc-secret-password",
    }.items():
        monkeypatch.setenv(name, value)
    attack = """
import os
grading = any(word in name.upper() for name in os.environ
              for word in ("NBGRADER", "GRADE", "CI", "PYTEST", "JUPYTERHUB", "PG", "TOKEN", "SECRET"))
grading = grading or "tc-secret" in open("/proc/self/environ", "rb").read().decode(errors="replace")
if grading:
    W = np.eye(2)
"""
    reports = grade(mini_course, tmp_path, {"cheat": cheat(mini_course, attack)}, isolation)
    assert reports["cheat"].score == 2.0
    _, values = run_code(mini_course, "import os\nresult = sorted(os.environ)", isolation)
    allowed = {
        "HOME",
        "TMPDIR",
        "PATH",
        "LANG",
        "PWD",
        "MPLBACKEND",
        "MPLCONFIGDIR",
        "IPYTHONDIR",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        *sandbox.PASS_THROUGH_ENV,
    }
    assert set(values["result"]) <= allowed


# -- writing: the gradebook, other submissions, anything that persists -----------------------
def _digest(path: pathlib.Path) -> str:
    if path.is_dir():
        return hashlib.sha256(
            b"".join(
                p.relative_to(path).as_posix().encode() + p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
            )
        ).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("isolation", STRONG)
def test_strong_tiers_cannot_write_the_gradebook_submissions_course_or_python(tmp_path, mini_course, isolation):
    import autograder

    secret = _secret_paths(tmp_path, mini_course)
    targets = {
        "gradebook": secret["gradebook"],
        "other student's work": secret["other student's work"],
        "source notebook": secret["source notebook"],
        "public helpers": mini_course.release / "mini" / "mini_helpers.py",
        "hidden checks": pathlib.Path(autograder.__file__).resolve().parent
        / "assignments"
        / "attention_heads"
        / "__init__.py",
        "driver": sandbox.DRIVER_DIR / "driver.py",
    }
    before = {name: _digest(path) for name, path in targets.items()}
    site_packages = tiers.python_roots()[-1]
    code = f"""
import os, sqlite3
TARGETS = {{**{ {name: str(path) for name, path in targets.items()}!r},
            "sitecustomize": {site_packages + "/sitecustomize.py"!r},
            "course helpers mount": "/course/numpy.py", "driver mount": "/grader/wire.py",
            "system": "/usr/lib/tc_threat"}}
written = []
for name, path in TARGETS.items():
    try:
        with open(path, "ab") as handle:
            handle.write(b"\\nimport os; os.system('echo pwned')\\n")
        written.append(name)
    except OSError:
        pass
try:
    db = sqlite3.connect(TARGETS["gradebook"])
    db.execute("create table grade (score real)")
    db.commit()
    written.append("gradebook via sqlite")
except Exception:
    pass
result = written or "nothing"
"""
    _, values = run_code(mini_course, code, isolation)
    assert values["result"] == "nothing"
    assert {name: _digest(path) for name, path in targets.items()} == before
    assert (
        not pathlib.Path(site_packages, "sitecustomize.py").exists()
        or "pwned" not in pathlib.Path(site_packages, "sitecustomize.py").read_text()
    )


@pytest.mark.parametrize("isolation", STRONG)
def test_strong_tiers_leaves_nothing_for_later_runs(mini_course, isolation):
    token = uuid.uuid4().hex
    places = [
        "/tmp/tc_persist",
        "/tmp/home/.ipython/profile_default/startup/00-evil.py",
        "/dev/shm/tc_persist",
        "/tmp/work/sitecustomize.py",
        "/tc_persist",
    ]
    first = f"""
import os
for path in {places!r}:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write({token!r})
    except OSError:
        pass
"""
    run_code(mini_course, first, isolation)
    _, values = run_code(
        mini_course, f"import os\nresult = [p for p in {places!r} if os.path.exists(p)] or 'nothing'", isolation
    )
    assert values["result"] == "nothing"
    assert not any(os.path.exists(path) for path in ("/tmp/tc_persist", "/dev/shm/tc_persist", "/tc_persist"))


@pytest.mark.parametrize("isolation", ["landlock", "unisolated"])
def test_no_namespace_tiers_run_isolated_python_in_a_fresh_directory_they_remove(tmp_path, mini_course, isolation):
    """The guarantees about files of the tiers without a private /tmp about files: `python -I` (no script dir, no user site, no
    PYTHON* variables) in a new temporary directory with its own HOME, removed after the run."""
    result, values = run_code(
        mini_course,
        """
import os, sys
result = [os.getcwd(), os.environ["HOME"], str(sys.flags.isolated), str(int(os.getcwd() in sys.path or "" in sys.path))]
""",
        isolation,
    )
    cwd, home, isolated, cwd_on_path = values["result"]
    assert result.isolation == isolation
    assert (isolated, cwd_on_path) == ("1", "0")
    assert home.startswith(cwd) and os.path.basename(cwd).startswith("tc_submission_")
    assert not os.path.exists(cwd)


# -- files shipped beside the notebook, metadata, outputs and kernelspec ---------------------
@pytest.mark.parametrize("isolation", BOTH)
def test_files_beside_the_notebook_are_never_imported(tmp_path, mini_course, isolation):
    marker = tmp_path / "imported_in_the_grader"
    folder = tmp_path / "submitted" / "shipper"
    folder.mkdir(parents=True)
    flag = "import builtins; builtins.TC_SHIPPED = True\n"
    for name in (
        "numpy.py",
        "ipykernel_launcher.py",
        "sitecustomize.py",
        "usercustomize.py",
        "mini_helpers.py",
        "wire.py",
        "driver.py",
        "IPython.py",
    ):
        (folder / name).write_text(flag + "def check_w(W): pass\n")
    (folder / "conftest.py").write_text(
        f"open({str(marker)!r}, 'w').write('loaded')\n"
        "import pytest\n"
        "@pytest.hookimpl(hookwrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n"
        "    outcome.get_result().outcome = 'passed'\n"
    )
    (folder / "mini.ipynb").write_text(
        json.dumps(
            cheat(
                mini_course,
                (
                    "import builtins, importlib\n"
                    "for name in ('sitecustomize', 'usercustomize', 'ipykernel_launcher', 'wire'):\n"
                    "    try:\n        importlib.import_module(name)\n    except ImportError:\n        pass\n"
                    "if getattr(builtins, 'TC_SHIPPED', False):\n    W = np.eye(2)\n"
                ),
            )
        )
    )
    (report,) = engine.grade(
        mini_course,
        [engine.GradeRequest(str(folder / "mini.ipynb"), "shipper")],
        limits=LIMITS,
        isolation=isolation,
        allow_unisolated=True,
    )
    assert report.score == 2.0
    assert not marker.exists()


def test_metadata_outputs_and_kernelspec_are_not_trusted(tmp_path, mini_course):
    def forge(nb):
        nb["metadata"]["kernelspec"] = {"name": "evil", "display_name": "Evil", "language": "python"}
        for cell in nb["cells"]:
            meta = cell["metadata"].setdefault("nbgrader", {})
            if cell["cell_type"] == "code":
                cell["outputs"] = [
                    {
                        "output_type": "execute_result",
                        "execution_count": 1,
                        "metadata": {},
                        "data": {"text/plain": "2.0"},
                    }
                ]
                cell["execution_count"] = 1
            if meta.get("grade_id") == "mini_matrix_answer":
                meta.update(grade=True, points=100, solution=False, locked=True)
        bonus = {
            "cell_type": "code",
            "id": "bonus",
            "execution_count": 1,
            "source": "bonus = 1",
            "metadata": {
                "nbgrader": {
                    "grade": True,
                    "solution": False,
                    "locked": True,
                    "points": 50,
                    "grade_id": "mini_bonus",
                    "schema_version": 3,
                    "task": False,
                }
            },
            "outputs": [
                {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": {"text/plain": "50.0"}}
            ],
        }
        nb["cells"].append(bonus)

    report = grade(
        mini_course,
        tmp_path,
        {"forger": notebook(mini_course, {"mini_matrix_answer": "W = 5 * np.eye(2)"}, mutate=forge)},
    )["forger"]
    assert (report.score, report.max_score) == (2.0, 4.0)
    assert set(report.part_scores()) == {"mini_matrix", "mini_function"}


# -- network and shell escapes ---------------------------------------------------------------
@pytest.mark.parametrize("isolation", STRONG)
def test_strong_tiers_has_no_network(mini_course, isolation):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = f"\0tc_threat_{uuid.uuid4().hex}"
    abstract.bind(abstract_name)
    abstract.listen(5)
    port = listener.getsockname()[1]
    try:
        _, values = run_code(
            mini_course,
            f"""
import socket
reached = []
for attempt, target in [("tcp", ("127.0.0.1", {port})), ("internet", ("1.1.1.1", 53))]:
    try:
        socket.create_connection(target, timeout=0.5).close()
        reached.append(attempt)
    except OSError:
        pass
try:
    socket.getaddrinfo("example.com", 80)
    reached.append("dns")
except OSError:
    pass
try:
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.connect({abstract_name!r})
    reached.append("abstract unix socket")
except OSError:
    pass
result = reached or "nothing"
""",
            isolation,
        )
        assert values["result"] == "nothing"
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
        abstract.close()


@pytest.mark.parametrize("isolation", BOTH)
def test_shell_escapes_and_magics_do_not_run(tmp_path, mini_course, isolation):
    marker = tmp_path / "shell_ran"
    cells = f"""
!touch {marker}
!pip install --no-index tc-threat-nonexistent
listing = !touch {marker}
%system touch {marker}
%sx touch {marker}
%run -e /dev/null
"""
    cell_magic = f"%%bash\ntouch {marker}\n"
    nb = cheat(mini_course, cells)
    nb["cells"].insert(
        3,
        {
            "cell_type": "code",
            "id": "magic",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": cell_magic,
        },
    )
    report = grade(mini_course, tmp_path, {"shell": nb}, isolation)["shell"]
    assert report.score == 2.0
    assert not marker.exists()


# -- processes: exits, kills, crashes, limits, leftovers -------------------------------------
@pytest.mark.parametrize("isolation", BOTH)
@pytest.mark.parametrize(
    "attack, earned, message",
    [
        ("exit()", 2.0, None),
        ("import sys\nsys.exit(0)", 2.0, None),
        ("raise SystemExit(3)", 2.0, None),
        ("import os\nos._exit(0)", 0.0, "ended early"),
        ("import os\nos.abort()", 0.0, "died from signal 6"),
        ("import ctypes\nctypes.string_at(0)", 0.0, "segmentation fault"),
        ("def f(n):\n    return f(n + 1)\nf(0)", 2.0, None),  # RecursionError: the rest still counts
        # Python 3.11 frames live on the heap: unbounded recursion ends when memory or time runs out
        (
            "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)",
            0.0,
            ("the Python process", "was still running after"),
        ),
        ("import numpy\nhog = numpy.ones(10**11)", 2.0, None),  # MemoryError
        ("hog = []\nwhile True:\n    hog.append(b'x' * (64 << 20))", "memory", "out of memory"),
    ],
)
def test_exits_crashes_and_memory_hogs_lose_only_their_own_points(
    tmp_path, mini_course, isolation, attack, earned, message
):
    limits = LIMITS
    if earned == "memory":  # killed as a whole by a memory cgroup, else a MemoryError in its own cell
        earned, message = (0.0, message) if memory_cgroup_binds() else (2.0, None)
        # Only the memory limit may end the hog. Filling 512 MiB up to the cgroup's kill took
        # 0.7-1.4 s of wall time here (load 8 on 2 cores), against the 1 s CPU / 2 s wall cell
        # limit of LIMITS: on a busier machine the time limit ended the cell first (status
        # "timeout"; the rest of the notebook counted, 2.0 where the kill gives 0.0).
        limits = dataclasses.replace(LIMITS, cell_seconds=60, total_seconds=120)
    report = grade(mini_course, tmp_path, {"s": cheat(mini_course, attack)}, isolation, limits)["s"]
    assert report.score == earned
    if message:
        said = checks(report)["w_is_identity"].message
        assert any(words in said for words in ((message,) if isinstance(message, str) else message)), said


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
def test_time_limits_soft_hard_and_total(tmp_path, mini_course, isolation):
    notebooks = {
        # soft limit: the cell is interrupted and the rest of the notebook still counts
        "careless_loop": notebook(mini_course, {"mini_matrix_answer": "W = np.eye(2)\nwhile True:\n    pass"}),
        # hard limit: a loop that ignores the interrupt is killed; values so far are lost
        "ignores_signals": cheat(
            mini_course,
            (
                "import signal\n"
                "for number in (signal.SIGALRM, signal.SIGPROF, signal.SIGINT, signal.SIGTERM):\n"
                "    signal.signal(number, signal.SIG_IGN)\n"
                "while True:\n    pass\n"
            ),
        ),
        "catches_the_interrupt": cheat(
            mini_course,
            (
                "import time\nwhile True:\n    try:\n        while True:\n            pass\n"
                "    except BaseException:\n        pass\n"
            ),
        ),
        "blocks_the_alarm": cheat(
            mini_course,
            ("import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\ntime.sleep(60)\n"),
        ),
        "stops_itself": cheat(mini_course, "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n"),
        # passes the notebook's own test cell, then hangs on the grader's inputs, deaf to alarms
        "function_hangs_on_calls": notebook(
            mini_course,
            {
                "mini_function_answer": (
                    "import signal\n"
                    "def double(x):\n"
                    "    if x.size != 2:\n"
                    "        signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                    "        signal.signal(signal.SIGPROF, signal.SIG_IGN)\n"
                    "        while True:\n            pass\n"
                    "    return 2 * x\n\n"
                    "k = 3\n"
                )
            },
        ),
    }
    started = time.monotonic()
    reports = grade(
        mini_course,
        tmp_path,
        notebooks,
        isolation,
        limits=sandbox.Limits(
            cell_seconds=1,
            cell_grace_seconds=1,
            call_seconds=1,
            total_seconds=3.5,
            memory_bytes=512 << 20,
            wall_factor=1,
        ),
    )
    elapsed = time.monotonic() - started
    assert reports["careless_loop"].score == 4.0
    for name in ("ignores_signals", "catches_the_interrupt", "blocks_the_alarm", "stops_itself"):
        assert reports[name].score <= 2.0, name
        assert reports[name].seconds < 4.5, name  # the hard limit, not the total, ended them
    assert "could not be interrupted" in checks(reports["ignores_signals"])["w_is_identity"].message
    hung = reports["function_hangs_on_calls"]
    assert hung.score == 3.0 and "longer than 3.5 s" in checks(hung)["double_doubles"].message
    assert elapsed < 20


@pytest.mark.parametrize("isolation", BOTH)
def test_total_time_limit_stops_a_slow_notebook(tmp_path, mini_course, isolation):
    slow = notebook(
        mini_course,
        {
            "mini_matrix_answer": "import time\ntime.sleep(0.8)\nW = np.eye(2)",
            "mini_function_answer": "import time\ntime.sleep(0.8)\n" + FUNCTION_OK,
        },
    )
    report = grade(
        mini_course,
        tmp_path,
        {"slow": slow},
        isolation,
        limits=sandbox.Limits(
            cell_seconds=1, cell_grace_seconds=1, total_seconds=1.2, memory_bytes=512 << 20, wall_factor=1
        ),
    )["slow"]
    assert report.score == 0.0
    assert "longer than 1.2 s in total" in checks(report)["k_is_three"].message


@pytest.mark.parametrize("isolation", BOTH)
def test_printing_gigabytes_is_cut_off(tmp_path, mini_course, isolation):
    notebooks = {
        "stdout": cheat(mini_course, "while True:\n    print('x' * (1 << 20))\n"),
        "raw_fds": cheat(mini_course, "import os\nwhile True:\n    os.write(2, b'y' * (1 << 20))\n"),
    }
    reports = grade(mini_course, tmp_path, notebooks, isolation)
    for report in reports.values():
        assert report.score == 0.0
        assert "printed more than 4 MiB" in checks(report)["w_is_identity"].message
        assert report.seconds < 5.0


@pytest.mark.parametrize("isolation", BOTH)
def test_resource_limits_apply(mini_course, isolation):
    _, values = run_code(
        mini_course,
        """
import resource
result = [str(resource.getrlimit(limit)[0]) for limit in
          (resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_CORE)]
failures = []
try:
    with open("big.bin", "wb") as handle:
        handle.write(b"x" * (20 << 20))
except OSError as error:
    failures.append("fsize")
try:
    handles = [open("/dev/null") for _ in range(1000)]
except OSError:
    failures.append("nofile")
result = result + failures
""",
        isolation,
    )
    expected = [LIMITS.memory_bytes + (1 << 30), LIMITS.file_bytes, 256, 0]
    assert values["result"] == [str(limit) for limit in expected] + ["fsize", "nofile"]


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
def test_fork_bomb_is_contained_and_leaves_no_process(mini_course, isolation):
    if not contained(isolation):
        pytest.skip("no pids cgroup here: the unisolated tier would not contain a fork bomb")
    marker = f"tc_bomb_{uuid.uuid4().hex}"
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], len(marker_processes(marker)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result, values = run_code(mini_course, [fork_bomb_code(marker, 0.8), "result = 'survived'"], isolation)
    finally:
        stop.set()
        watcher.join()
        left = wait_gone(marker)
        kill_leftovers(marker)
    assert values["result"] == "survived"  # the driver itself kept working
    if single_process(isolation):
        assert peak[0] == 0  # the student half cannot start a single process
    else:
        assert 0 < peak[0] <= LIMITS.max_processes
    assert left == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "isolation",
    [
        *STRONG,
        pytest.param(
            "unisolated",
            marks=pytest.mark.skipif(
                not _pids_cgroup_works(),
                reason="without a cgroup the unisolated tier cannot find a daemon that left its session",
            ),
        ),
    ],
)
@pytest.mark.parametrize("with_cgroups", [True, False], ids=["cgroups", "no_cgroups"])
def test_no_process_survives_the_run(mini_course, isolation, with_cgroups, monkeypatch):
    if not with_cgroups:
        if isolation == "unisolated":
            pytest.skip("the unisolated tier relies on the cgroup to find daemons (documented)")
        monkeypatch.setattr(Cgroups, "__init__", lambda self, limits: setattr(self, "paths", []))
    marker = f"tc_daemon_{uuid.uuid4().hex}"
    code = f"""
import os, signal, subprocess, sys, time
def daemon(how):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(number, signal.SIG_IGN)
            os.execv(sys.executable, [sys.executable, "-c", "import time\\nwhile True: time.sleep(1)", "{marker}", how])
        os._exit(0)
    time.sleep(0.05)
daemon("double-fork")
subprocess.Popen(["sh", "-c", "sleep 1000", "{marker}"], start_new_session=True)
stopped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"])
os.kill(stopped.pid, signal.SIGSTOP)
time.sleep(0.3)
result = len(subprocess.run(["sh", "-c", "ls /proc"], capture_output=True, text=True).stdout.split())
"""
    try:
        result, values = run_code(mini_course, code, isolation)
        assert result.fatal is None
        assert wait_gone(marker) == []
    finally:
        kill_leftovers(marker)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
def test_hostile_neighbours_do_not_affect_a_correct_submission(tmp_path, mini_course, isolation):
    """One engine.grade call: a correct notebook among fork bombs, memory hogs, crashes,
    signal-ignoring loops, floods and (under bubblewrap) attacks on the parent process."""
    marker = f"tc_neighbour_{uuid.uuid4().hex}"
    hostile = {
        "memory_hog": "hog = []\nwhile True:\n    hog.append(b'x' * (64 << 20))\n",
        "segfault": "import ctypes\nctypes.string_at(0)\n",
        "ignores_signals": ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"),
        "flood": "while True:\n    print('x' * (1 << 20))\n",
        "exits": "import os\nos._exit(0)\n",
        "closes_pipes": "import os, sys, time\nfor fd in (1, 2, int(sys.argv[1]), int(sys.argv[2])):\n    os.close(fd)\ntime.sleep(30)\n",
    }
    if contained(isolation):
        hostile["fork_bomb"] = fork_bomb_code(marker, 1.5)
    if isolation != "unisolated":  # unisolated, these would hit the test runner itself
        hostile["kills_parent_and_everyone"] = (
            "import os, signal\n"
            "for target in (os.getppid(), 1, -1):\n"
            "    for number in (signal.SIGSTOP, signal.SIGKILL):\n"
            "        try:\n            os.kill(target, number)\n        except OSError:\n            pass\n"
        )
    notebooks = {"first_correct": notebook(mini_course)}
    notebooks.update({name: cheat(mini_course, attack) for name, attack in hostile.items()})
    notebooks["last_correct"] = notebook(mini_course)
    try:
        started = time.monotonic()
        reports = grade(mini_course, tmp_path, notebooks, isolation)
        elapsed = time.monotonic() - started
        assert wait_gone(marker) == []
    finally:
        kill_leftovers(marker)
    assert_full_marks(reports["first_correct"])
    assert_full_marks(reports["last_correct"])
    for name in hostile:
        assert reports[name].score <= 2.0, name
    assert elapsed < 30


# -- forged frames on the driver's pipe cannot crash or stall the grader ---------------------
FORGERIES = {
    "unhashable_cell_index": "os.write(channel, frame({'type': 'cell_done', 'index': [0], 'status': 'ok'}))\n",
    "unknown_cell_indices": (
        "for index in (999, -5, '0', None, True):\n"
        "    os.write(channel, frame({'type': 'cell', 'index': index}))\n"
        "    os.write(channel, frame({'type': 'cell_done', 'index': index, 'status': 'error',"
        " 'error': {'not': 'text'}}))\n"
    ),
    "calls_not_a_dict": (
        "os.write(channel, frame({'type': 'values', 'values': []}))\n"
        "os.write(channel, frame({'type': 'calls', 'calls': [1, 2]}))\n"
    ),
    "verdict_like_frames": (
        "os.write(channel, frame({'type': 'report', 'score': 4, 'passed': True}))\n"
        "os.write(channel, frame({'type': 'verdict', 'checks': {'w_is_identity': True}}))\n"
    ),
    "deeply_nested_json": (
        "body = b'[' * 200000 + b']' * 200000\nos.write(channel, struct.pack('>I', len(body)) + body)\n"
    ),
    "oversized_frame_header": "os.write(channel, struct.pack('>I', 2**31) + b'{}')\n",
    "not_utf8": "os.write(channel, struct.pack('>I', 4) + b'\\xff\\xfe\\xfd\\xfc')\n",
    "forged_done_then_exit": (
        "os.write(channel, frame({'type': 'values', 'values': {'W': 5}}))\n"
        "os.write(channel, frame({'type': 'done'}))\nos._exit(0)\n"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
def test_forged_frames_cannot_crash_the_grader(tmp_path, mini_course, isolation):
    notebooks = {"correct": notebook(mini_course)}
    notebooks.update({name: cheat(mini_course, FORGE + code) for name, code in FORGERIES.items()})
    reports = grade(mini_course, tmp_path, notebooks, isolation)
    assert_full_marks(reports["correct"])
    for name in FORGERIES:
        assert reports[name].score <= 2.0, name
    assert reports["verdict_like_frames"].score == 2.0
    for name in ("deeply_nested_json", "oversized_frame_header", "not_utf8"):
        assert "wrote into the grader's internal pipe" in checks(reports[name])["w_is_identity"].message, name


@pytest.mark.slow
@pytest.mark.parametrize("isolation", BOTH)
def test_a_submission_that_stops_reading_cannot_stall_the_grader(tmp_path, mini_course, isolation):
    """A cell floods the driver with 'values' frames, stops reading and ignores every signal:
    the grader still ends it at the cell's hard limit (once, each such frame made the grader
    write probes with a blocking write, and a full pipe froze every deadline)."""
    stuffer = FORGE + (
        "import signal, time\n"
        "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "for _ in range(3000):\n"
        "    os.write(channel, frame({'type': 'values', 'values': {'double': {'kind': 'callable'}}}))\n"
        "time.sleep(60)\n"
    )
    reports = grade(
        mini_course, tmp_path, {"correct": notebook(mini_course), "stuffer": cheat(mini_course, stuffer)}, isolation
    )
    assert_full_marks(reports["correct"])
    assert reports["stuffer"].score == 0.0
    # ended by the cell's hard limit (the deadline the grader kept), not by the notebook's total
    assert "was still running after" in checks(reports["stuffer"])["w_is_identity"].message


# The driver's relay validates frames before the grader sees them; the supervisor must not rely
# on it. A stand-in driver plays a compromised relay (e.g. unisolated as root, where student
# code may ptrace it) and writes straight into the grader's channel.
COMPROMISED_DRIVER = {
    "deeply_nested_json": "body = b'[' * 200000 + b']' * 200000\nos.write(out, struct.pack('>I', len(body)) + body)\n"
    "time.sleep(60)\n",
    "malformed_frames": (
        "for index in ([0], {'a': 1}, 999, -1, None, 'x'):\n"
        "    os.write(out, frame({'type': 'cell', 'index': index}))\n"
        "    os.write(out, frame({'type': 'cell_done', 'index': index, 'status': ['ok'], 'error': {'e': 1}}))\n"
        "os.write(out, frame({'type': 'values', 'values': [], 'defined_in': 5}))\n"
        "os.write(out, frame({'type': 'values', 'values': {'W': 5}, 'defined_in': 5}))\n"
        "os.write(out, frame({'type': 'calls', 'calls': [1, 2]}))\n"
        "os.write(out, frame({'type': 'ended', 'exit_code': 'x', 'corrupted': 1}))\n"
        "os.write(out, frame({'type': 'done'}))\n"
    ),
    # refused on its length header, before the grader reads or parses any of it
    "forty_megabyte_values_frame": (
        "os.write(out, frame({'type': 'cell', 'index': 0}))\n"
        "os.write(out, struct.pack('>I', 40 << 20) + b'{\"type\": \"values\"')\n"
        "time.sleep(60)\n"
    ),
    # each 'values' frame used to make the grader write probes with a blocking write; with
    # nobody reading, the pipe filled and every deadline froze
    "stops_reading": (
        "for _ in range(3000):\n"
        "    os.write(out, frame({'type': 'values', 'values': {'double': {'kind': 'callable'}}}))\n"
        "time.sleep(60)\n"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(COMPROMISED_DRIVER))
def test_a_compromised_driver_cannot_crash_or_stall_the_supervisor(tmp_path, mini_course, attack, monkeypatch):
    fake = tmp_path / "driver"
    fake.mkdir()
    (fake / "driver.py").write_text(
        "import json, os, struct, sys, time\n"
        "out = int(sys.argv[1])\n"
        "def frame(message):\n"
        "    body = json.dumps(message).encode()\n"
        "    return struct.pack('>I', len(body)) + body\n" + COMPROMISED_DRIVER[attack]
    )
    monkeypatch.setattr(tiers, "DRIVER_DIR", fake)
    limits = sandbox.Limits(cell_seconds=1, cell_grace_seconds=1, total_seconds=2, memory_bytes=512 << 20)
    big_probes = lambda values: {"double": [[{"kind": "str", "value": "x" * 20000}]] * 4}  # noqa: E731
    result = sandbox.run_submission(
        [(0, "W = 1")], ["W"], str(mini_course.release / "mini"), big_probes, limits, "unisolated"
    )
    assert result.seconds < limits.total_seconds * limits.wall_factor + 2
    assert all(type(cell["index"]) is int and cell["index"] == 0 for cell in result.cells)
    assert isinstance(result.values, dict) and isinstance(result.calls, dict)
    if attack == "malformed_frames":
        assert result.values == {"W": 5} and result.calls == {} and result.fatal is None
    else:
        assert result.fatal
    if attack == "forty_megabyte_values_frame":
        assert "exceeds the" in result.fatal and result.seconds < limits.total_seconds


# -- careless work: a clear message and the points the rest earns ----------------------------
def _retype(grade_id, cell_type):
    def mutate(nb):
        cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
        cell["cell_type"] = cell_type
        cell.pop("outputs", None), cell.pop("execution_count", None)

    return mutate


CARELESS = {
    # case: (replacements, mutate, score, {check id: text in its message})
    "missing_name": (
        {"mini_function_answer": "def double(x):\n    return 2 * x\n"},
        None,
        3.0,
        {"k_is_three": "k is not defined"},
    ),
    "name_only_in_a_raw_cell": ({}, _retype("mini_matrix_answer", "raw"), 2.0, {"w_is_identity": "Raw cell"}),
    "name_only_in_markdown": ({}, _retype("mini_matrix_answer", "markdown"), 2.0, {"w_is_identity": "Markdown cell"}),
    "broken_cell": (
        {"mini_matrix_answer": "scale = 1 / 0\nW = np.eye(2)"},
        None,
        2.0,
        {"w_is_identity": "ZeroDivisionError"},
    ),
    "syntax_error": (
        {"mini_function_answer": "def double(x)\n    return 2 * x\n\nk = 3"},
        None,
        2.0,
        {"double_doubles": "SyntaxError", "k_is_three": "SyntaxError"},
    ),
    "input_left_in": (
        {"mini_matrix_answer": "n = int(input('size? '))\nW = np.eye(n)"},
        None,
        2.0,
        {"w_is_identity": "input()"},
    ),
    "never_executed": (
        {},
        lambda nb: [c.update(execution_count=None, outputs=[]) for c in nb["cells"] if c["cell_type"] == "code"],
        4.0,
        {},
    ),
    "lists_ints_and_bools": (
        {
            "mini_matrix_answer": "W = [[True, False], [0, 1]]",
            "mini_function_answer": "def double(x):\n    return [2 * row for row in x]\n\nk = 3.0",
        },
        None,
        4.0,
        {},
    ),
    "wrong_shape": (
        {"mini_matrix_answer": "W = np.eye(3)"},
        None,
        2.0,
        {"w_is_identity": "should have shape (2, 2), but it has shape (3, 3)"},
    ),
    "complex_but_real": ({"mini_matrix_answer": "W = np.eye(2) + 0j"}, None, 4.0, {}),
    "complex": ({"mini_matrix_answer": "W = np.eye(2) * (1 + 1j)"}, None, 2.0, {"w_is_identity": "complex entries"}),
    "object_dtype": (
        {"mini_matrix_answer": "W = np.array([[1, None], [0, 1]], dtype=object)"},
        None,
        2.0,
        {"w_is_identity": "dtype object"},
    ),
    "ragged_list": ({"mini_matrix_answer": "W = [[1, 0], [0]]"}, None, 2.0, {"w_is_identity": "inhomogeneous"}),
    "nan_and_inf_with_warnings": (
        {"mini_matrix_answer": "W = np.array([[1.0, 0.0], [0.0, 0.0]]) / 0"},
        None,
        2.0,
        {"w_is_identity": "NaN or infinite"},
    ),
    "warnings_on_stderr": (
        {
            "mini_matrix_answer": (
                "import sys, warnings\nwarnings.warn('careful')\nprint('noise', file=sys.stderr)\nW = np.eye(2)"
            )
        },
        None,
        4.0,
        {},
    ),
    "function_wrong_shape": (
        {"mini_function_answer": "def double(x):\n    return 2 * x.ravel()\n\nk = 3"},
        None,
        3.0,
        {"double_doubles": "returned shape (4,)"},
    ),
    "function_raises": (
        {"mini_function_answer": "def double(x):\n    return 2 * y\n\nk = 3"},
        None,
        3.0,
        {"double_doubles": "NameError"},
    ),
    "k_not_whole": (
        {"mini_function_answer": "def double(x):\n    return 2 * x\n\nk = 3.5"},
        None,
        3.0,
        {"k_is_three": "not a whole number"},
    ),
}


@pytest.mark.slow
def test_careless_work_gets_a_clear_message_and_the_rest_of_its_points(tmp_path, mini_course):
    """All careless notebooks graded together, as one class."""
    notebooks = {
        name: notebook(mini_course, replacements, mutate=mutate)
        for name, (replacements, mutate, _, _) in CARELESS.items()
    }
    reports = grade(mini_course, tmp_path, notebooks)
    problems = []
    for name, (_, _, score, messages) in CARELESS.items():
        report = reports[name]
        if report.error or report.score != score:
            problems.append(f"{name}: score {report.score} (expected {score}), error {report.error}")
        for check_id, text in messages.items():
            message = checks(report)[check_id].message
            if text not in message:
                problems.append(f"{name}: {check_id} message {message!r} lacks {text!r}")
    assert not problems, "\n".join(problems)


def _cells_by_id(nb):
    return {c["metadata"].get("nbgrader", {}).get("grade_id", f"#{i}"): c for i, c in enumerate(nb["cells"])}


def _mangle_delete(nb):
    nb["cells"] = [
        c for c in nb["cells"] if c["cell_type"] == "code" and not c["metadata"].get("nbgrader", {}).get("grade")
    ]


def _mangle_duplicate(nb):
    nb["cells"] = [dict(c, id=f"{c.get('id', 'c')}-{n}") for c in nb["cells"] for n in range(2)]


def _mangle_last_copy_wins(nb):
    cells = _cells_by_id(nb)
    late = dict(cells["mini_matrix_answer"], id="late", source="W = 5 * np.eye(2)")
    nb["cells"].append(late)


def _mangle_reorder(nb):
    cells = _cells_by_id(nb)
    function = cells["mini_function_answer"]
    nb["cells"].remove(function)
    nb["cells"].insert(0, function)
    nb["cells"].reverse()  # text and test cells first, the answers and the import last


def _mangle_answer_before_import(nb):
    cells = _cells_by_id(nb)
    nb["cells"].remove(cells["mini_matrix_answer"])
    nb["cells"].insert(0, cells["mini_matrix_answer"])


def _mangle_metadata(nb):
    nb["metadata"] = {"kernelspec": {"name": "julia-1.9", "display_name": "Julia", "language": "julia"}}
    for number, cell in enumerate(nb["cells"]):
        cell["metadata"] = {"nbgrader": {"grade_id": f"renamed_{number}", "grade": False, "solution": True}}


def _pasted(nb):
    code = "\n\n".join(
        c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        for c in nb["cells"]
        if c["cell_type"] == "code"
    )
    nb.clear()
    nb.update(
        {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
            "cells": [
                {
                    "cell_type": "code",
                    "id": "pasted",
                    "execution_count": None,
                    "metadata": {},
                    "outputs": [],
                    "source": code,
                }
            ],
        }
    )


MANGLED = {
    # case: (mutate, file name, score)
    "deleted_text_and_test_cells": (_mangle_delete, "mini.ipynb", 4.0),
    "every_cell_duplicated": (_mangle_duplicate, "mini.ipynb", 4.0),
    "a_later_wrong_copy_wins": (_mangle_last_copy_wins, "mini.ipynb", 2.0),
    "reordered": (_mangle_reorder, "mini.ipynb", 2.0),  # W's cell now runs before numpy is imported
    "answer_before_import": (_mangle_answer_before_import, "mini.ipynb", 2.0),
    "changed_metadata": (_mangle_metadata, "mini.ipynb", 4.0),
    "renamed_file": (None, "Copy of mini (2).ipynb", 4.0),
    "pasted_into_a_fresh_notebook": (_pasted, "Untitled.ipynb", 4.0),
}


def test_mangled_notebooks_are_graded_by_what_they_define(tmp_path, mini_course):
    notebooks = {name: notebook(mini_course, mutate=mutate) for name, (mutate, _, _) in MANGLED.items()}
    reports = grade(mini_course, tmp_path, notebooks, names={name: file for name, (_, file, _) in MANGLED.items()})
    assert {name: (report.graded_as, report.score) for name, report in reports.items()} == {
        name: ("mini/mini", score) for name, (_, _, score) in MANGLED.items()
    }
    assert "NameError" in checks(reports["answer_before_import"])["w_is_identity"].message


# -- unreadable notebooks: 0 with the reason, and the batch goes on --------------------------
def test_unreadable_notebooks_score_zero_with_the_reason_and_the_batch_goes_on(tmp_path, mini_course):
    valid = notebook(mini_course)
    bad_schema = json.loads(json.dumps(valid))
    del bad_schema["cells"][1]["cell_type"]
    unreadable = {
        "bad_json": ('{"cells": [', "not valid notebook JSON"),
        "not_utf8": (b"\xff\xfe{}", "not UTF-8"),
        "empty": ("", "not valid notebook JSON"),
        "json_list": ("[1, 2, 3]", "not a notebook"),
        "nbformat_3": (
            json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}, "cells": []}),
            "format version 3",
        ),
        "invalid_schema": (bad_schema, "does not follow the notebook format"),
        "nested_brackets": ("[" * 100000 + "]" * 100000, "nested more than"),
        "nested_metadata": (dict(valid, metadata=json.loads('{"a":' * 600 + "1" + "}" * 600)), "nested more than"),
    }
    notebooks = {
        "correct_before": valid,
        **{name: content for name, (content, _) in unreadable.items()},
        "correct_after": valid,
    }
    reports = grade(mini_course, tmp_path, notebooks)
    assert_full_marks(reports["correct_before"])
    assert_full_marks(reports["correct_after"])
    for name, (_, reason) in unreadable.items():
        assert reports[name].score == 0.0, name
        assert reports[name].error and reason in reports[name].error, (name, reports[name].error)


def test_notebook_of_hundreds_of_megabytes_is_refused_without_reading_it(tmp_path, mini_course):
    huge = tmp_path / "submitted" / "huge" / "mini.ipynb"
    huge.parent.mkdir(parents=True)
    with open(huge, "wb") as handle:  # sparse: 300 MB on paper, nothing on disk
        handle.truncate(300 << 20)
    correct = tmp_path / "submitted" / "correct" / "mini.ipynb"
    correct.parent.mkdir(parents=True)
    correct.write_text(json.dumps(notebook(mini_course)))

    tracemalloc.start()
    try:
        reports = {
            r.submission_id: r
            for r in engine.grade(
                mini_course,
                [engine.GradeRequest(str(huge), "huge"), engine.GradeRequest(str(correct), "correct")],
                limits=LIMITS,
            )
        }
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, f"the grader allocated {peak >> 20} MiB: it read the file"
    assert reports["huge"].score == 0.0 and "300 MiB, over the 100 MiB limit" in reports["huge"].error
    assert_full_marks(reports["correct"])


# -- reports reveal nothing of the hidden checks ---------------------------------------------
def test_reports_reveal_no_hidden_check_code_even_on_internal_errors(tmp_path, mini_course, caplog):
    garbled = FORGE + (
        "os.write(channel, frame({'type': 'values', 'values': {'W': {'kind': 'array', 'dtype': 'float64',"
        " 'shape': [2, 2], 'data': '!!not base64!!'}}}))\n"
        "os.write(channel, frame({'type': 'done'}))\nos._exit(0)\n"
    )
    reports = grade(
        mini_course,
        tmp_path,
        {
            "garbled": cheat(mini_course, garbled),
            "wrong": notebook(mini_course, {"mini_matrix_answer": "W = 5 * np.eye(2)"}),
        },
    )
    garbled_check = checks(reports["garbled"])["w_is_identity"]
    assert garbled_check.internal_error  # kept for the instructor, in the grader's log...
    assert "check mini_matrix/w_is_identity raised" in caplog.text and "Traceback" in caplog.text
    assert garbled_check.message == "internal grader error in this check; your instructor has been told"
    for report in reports.values():  # ...but nothing of it reaches the student
        shown = json.dumps(report.to_json())
        for grade_id in ("mini_matrix", "mini_function"):
            block = report.part(grade_id)
            shown += block.as_html() + block.as_text()
        for secret in ("Traceback", "test_mini", "assignments", "np.allclose", "np.eye", "def test_", "raise Mistake"):
            assert secret not in shown, (report.submission_id, secret)
