"""Isolation tiers where people really run the grader: tools taken away, tiers forced, non-root.

tests/sandbox/test_threats.py runs the threat tests once per tier this machine provides (as whichever
user runs the suite). Here: each tier's probe says why it is unavailable; `auto` falls through
the tiers as tools disappear (bubblewrap hidden from PATH, Landlock refused, no `prlimit`, as on
a minimal image or macOS); instructor grading refuses the plain process unless allowed; a
sandbox that cannot start or be confined is a grader error (exit 3), never a student's 0; the
relay rebuilds what the student half sends and the supervisor caps frames before parsing; and,
as an unprivileged user with hundreds of processes running, a correct notebook earns full
marks in every tier while attacks still fail in the strong ones.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from autograder.core import engine
from autograder.core.submission import decode_value
from autograder.sandbox import supervisor as sandbox
from autograder.sandbox import tiers
from autograder.sandbox.cgroups import Cgroups
from autograder.sandbox.driver import confine, wire
from tests.builders import REPOSITORY
from tests.builders.classes import auto_scores, run_batch
from tests.builders.sandbox import broken_driver
from tests.builders.sandbox import parametrize_starts as pytest_generate_tests  # noqa: F401 - each test once per start

pytestmark = pytest.mark.usefixtures("sandbox_start")  # fresh, or warm where a test runs per start

LIMITS = sandbox.Limits(
    cell_seconds=2,
    cell_grace_seconds=1,
    call_seconds=2,
    total_seconds=20,
    memory_bytes=512 << 20,
    max_output_bytes=4 << 20,
)
LANDLOCK_REASON = sandbox.probe_landlock()
requires_landlock = pytest.mark.skipif(LANDLOCK_REASON is not None, reason=f"landlock tier: {LANDLOCK_REASON}")
requires_bwrap = pytest.mark.skipif(not sandbox.bubblewrap_available(), reason="bubblewrap cannot run here")
AVAILABLE = [tier for tier, reason in sandbox.tier_status().items() if reason is None]
ROOT = REPOSITORY.root
SOLUTION = ROOT / "solutions" / "attention_heads" / "virtual_head.ipynb"


@pytest.fixture
def fresh_probes():
    """Probes are cached per process; these tests change what the machine offers. Afterwards
    the caches are emptied again, so that later tests probe the machine as it is."""
    probes = (sandbox.probe_bubblewrap, sandbox.probe_landlock)
    for probe in probes:
        probe.cache_clear()
    yield
    for probe in probes:
        probe.cache_clear()


@pytest.fixture
def without_tools(tmp_path, monkeypatch, fresh_probes):
    """PATH with python and sh but neither bwrap nor prlimit: a minimal image, or macOS."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sleep", "true", "ls"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("bwrap") is None and shutil.which("prlimit") is None
    return bin_dir


def run(cells, tier, names=("result",), limits=LIMITS, helpers=None):
    result = sandbox.run_submission(
        list(enumerate([cells] if isinstance(cells, str) else cells)),
        list(names),
        str(helpers or ROOT / "release" / "attention_heads"),
        lambda values: {},
        limits,
        tier,
    )
    return result, {name: decode_value(result.values.get(name, {"kind": "missing"})) for name in names}


# -- probing and choosing a tier -------------------------------------------------------------
def test_hidden_bubblewrap_is_reported_and_auto_takes_the_next_tier(without_tools):
    assert sandbox.probe_bubblewrap() == "bwrap is not installed (not found on PATH)"
    with pytest.raises(sandbox.SandboxUnavailable, match="bwrap is not installed.*apt-get install bubblewrap"):
        sandbox.choose_isolation("bubblewrap")
    expected = "landlock" if LANDLOCK_REASON is None else "unisolated"
    assert sandbox.choose_isolation("auto", allow_unisolated=True) == expected


def test_instructor_grading_refuses_the_plain_process_unless_allowed(without_tools, monkeypatch):
    monkeypatch.setattr(tiers, "probe_landlock", lambda: "Landlock and seccomp are Linux-only (this is darwin)")
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        sandbox.choose_isolation("auto")
    message = str(refused.value)
    for expected in (
        "bwrap is not installed",
        "apt-get install bubblewrap",
        "Linux-only",
        "landlock",
        "--allow-unisolated",
    ):
        assert expected in message
    with pytest.raises(sandbox.SandboxUnavailable, match="--allow-unisolated"):
        sandbox.choose_isolation("unisolated")
    assert sandbox.choose_isolation("auto", allow_unisolated=True) == "unisolated"


def test_cli_grade_without_a_sandbox_is_a_grader_error_and_check_still_works(without_tools, monkeypatch, capsys):
    """As on macOS: no bubblewrap, no Landlock, no prlimit. The instructor gets exit 3 with the
    reason; the self-learner's check runs unisolated, names that tier, and earns full marks."""
    from autograder.cli import main as cli

    monkeypatch.setattr(tiers, "probe_landlock", lambda: "Landlock and seccomp are Linux-only (this is darwin)")
    assert cli.main(["grade", str(SOLUTION)]) == cli.EXIT_GRADER_FAULT
    assert "--allow-unisolated" in capsys.readouterr().err
    assert cli.main(["grade", "--isolation", "bubblewrap", str(SOLUTION)]) == cli.EXIT_GRADER_FAULT
    assert "bubblewrap: bwrap is not installed" in capsys.readouterr().err  # a reason, not a traceback
    assert cli.main(["check", str(SOLUTION)]) == 0
    out = capsys.readouterr().out
    assert "(isolation: unisolated)" in out and "autograded total: 13/13" in out
    assert cli.main(["grade", "--allow-unisolated", "--json", str(SOLUTION)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["score"], report["isolation"], report["grader_error"]) == (13.0, "unisolated", None)


def test_undumpable_and_rlimits_need_no_linux_only_call_elsewhere(monkeypatch):
    """The driver's Linux-only calls are behind confine.IS_LINUX (macOS has no prctl)."""
    monkeypatch.setattr(confine, "IS_LINUX", False)
    confine.make_undumpable()  # a no-op, not an AttributeError from a missing libc symbol
    with pytest.raises(confine.ConfinementError, match="Linux-only"):
        confine.landlock_abi()
    with pytest.raises(confine.ConfinementError, match="Linux-only"):
        confine.seccomp_machine()
    driver_source = (sandbox.DRIVER_DIR / "driver.py").read_text()
    assert (
        "prctl" not in driver_source
        and "prlimit" not in (ROOT / "autograder" / "sandbox" / "supervisor.py").read_text()
    )


# -- grader faults are the grader's ------------------------------------------------------------
@pytest.mark.parametrize("tier", AVAILABLE)
def test_a_limit_that_cannot_be_set_is_a_grader_error_not_a_score(tmp_path, monkeypatch, tier):
    broken_driver(
        tmp_path,
        monkeypatch,
        confine_source=("\ndef confine(plan):\n    raise ConfinementError('RLIMIT_AS could not be set (test)')\n"),
    )
    request = engine.GradeRequest(str(SOLUTION), "s")
    (report,) = engine.grade(REPOSITORY, [request], limits=LIMITS, isolation=tier, allow_unisolated=True)
    assert report.grader_error and "could not be confined: RLIMIT_AS could not be set" in report.grader_error
    assert report.checks == [] and report.isolation == tier


@pytest.mark.parametrize("tier", AVAILABLE)
def test_a_sandbox_that_dies_at_start_is_a_grader_error_with_its_stderr(tmp_path, monkeypatch, tier):
    broken_driver(tmp_path, monkeypatch, driver_prefix="import sys\nsys.exit('driver: no numpy here')\n")
    result, _ = run("result = 1", tier)
    assert result.fatal is None
    assert "ended before running the notebook" in result.grader_error and "no numpy here" in result.grader_error


def test_cli_exits_3_and_batch_leaves_the_student_ungraded_on_grader_errors(tmp_path, monkeypatch, capsys):
    from autograder.cli import main as cli

    broken_driver(
        tmp_path,
        monkeypatch,
        confine_source=("\ndef confine(plan):\n    raise ConfinementError('seccomp filter refused (test)')\n"),
    )
    assert cli.main(["grade", "--allow-unisolated", str(SOLUTION)]) == cli.EXIT_GRADER_FAULT
    captured = capsys.readouterr()
    assert "NOT GRADED (grader error" in captured.out and "seccomp filter refused" in captured.err


# -- frames: rebuilt by the relay, capped before parsing by the supervisor -------------------
def test_relay_rebuilds_values_from_known_fields_only():
    explosive = {"kind": "strs", "items": [[[]] * 1000] * 1000}
    assert wire.clean_value(explosive)["kind"] == "object"
    assert wire.clean_values({"W": {"kind": "number", "value": 1, "extra": [0] * 100}, "other": 1}, ["W"]) == {
        "W": {"kind": "number", "value": 1.0, "integer": False}
    }
    assert wire.clean_value({"kind": "array", "dtype": "float64", "shape": [[1]], "data": ""})["kind"] == "object"
    assert wire.clean_calls({"f": [{"result": {"kind": "none"}}] * 50, "g": []}, {"f": 2}) == {
        "f": [{"result": {"kind": "none"}}] * 2
    }


def test_the_largest_arrays_the_driver_sends_pass_the_relay_and_fit_the_frame_caps():
    import numpy

    for array in (
        numpy.arange(wire.MAX_ARRAY_ELEMENTS, dtype=float),
        numpy.ones(wire.MAX_ARRAY_ELEMENTS // 2, dtype=complex),
    ):
        encoded = wire.encode_array(array, numpy)
        assert wire.clean_value(encoded) == encoded
        assert len(wire.pack_frame({"type": "values", "values": {"W": encoded}})) <= (
            wire.MAX_SMALL_FRAME_BYTES + wire.MAX_VALUE_BYTES
        )
        assert numpy.array_equal(wire.decode_array(encoded, numpy), array)
    assert wire.encode_array(numpy.ones(wire.MAX_ARRAY_ELEMENTS // 2 + 1, dtype=complex), numpy)["kind"] == "too_large"


def test_frame_length_is_checked_on_the_header_before_the_body_arrives():
    reader = wire.FrameReader(max_frame_bytes=lambda: 100)
    with pytest.raises(ValueError, match="exceeds the 100-byte limit"):
        reader.feed((101).to_bytes(4, "big"))  # no body sent at all: refused on the header


@pytest.mark.parametrize("tier", AVAILABLE)
def test_a_forty_megabyte_values_frame_never_reaches_the_grader(tier):
    """The student half writes its own oversized 'values' frame into the relay's pipe: the relay
    refuses it on its header (the student half is killed), the supervisor parses nothing of it."""
    flood = (
        "import json, os, struct, sys\n"
        'body = b\'{"type": "values", "values": {"result": [\' + b\'0,\' * (20 << 20) + b\'0]}}\'\n'
        "os.write(sys.modules['__main__']._channels['result'], struct.pack('>I', len(body)) + body)\n"
        "result = 'sent'\n"
    )
    result, values = run(flood, tier)
    assert values["result"] is None and result.grader_error is None
    assert "wrote into the grader's internal pipe" in result.fatal


# -- the landlock tier's confinement, directly ------------------------------------------------
@requires_landlock
def test_landlock_tier_refuses_processes_sockets_and_foreign_signals_but_allows_threads(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    code = f"""
import os, signal, socket, subprocess, threading
refused = []
def attempt(name, action):
    try:
        action()
    except OSError:
        refused.append(name)
attempt("fork", lambda: os.fork() or os._exit(0))
attempt("subprocess", lambda: subprocess.run(["true"]))
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=0.5))
attempt("unix socket", lambda: socket.socket(socket.AF_UNIX))
attempt("signal parent", lambda: os.kill(os.getppid(), 0))
attempt("signal init", lambda: os.kill(1, 0))
attempt("ptrace", lambda: open(f"/proc/{{os.getppid()}}/mem", "rb"))
attempt("write outside", lambda: open({str(tmp_path / "escaped")!r}, "w"))
attempt("read passwd", lambda: open("/etc/passwd").read())
ran = []
thread = threading.Thread(target=lambda: ran.append("thread"))
thread.start()
thread.join()
os.kill(os.getpid(), 0)
open("scratch.txt", "w").write("mine")
result = refused + ran + [str(os.getuid())]
"""
    result, values = run(code, "landlock")
    uid = str(sandbox.SANDBOX_UID if os.geteuid() == 0 else os.geteuid())
    assert values["result"] == [
        "fork",
        "subprocess",
        "tcp",
        "unix socket",
        "signal parent",
        "signal init",
        "ptrace",
        "write outside",
        "read passwd",
        "thread",
        uid,
    ], result.cells
    assert not (tmp_path / "escaped").exists()
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()


def test_seccomp_programs_are_well_formed_for_every_known_architecture():
    for machine in confine.SYSCALLS:
        for no_new_processes in (False, True):
            program = confine.seccomp_program(machine, no_new_processes, own_pid=1234)
            assert len(program) % 8 == 0 and len(program) // 8 < 4096  # BPF_MAXINSNS
            # every jump stays inside the program
            for position in range(0, len(program), 8):
                code, jt, jf, _ = __import__("struct").unpack("=HBBI", program[position : position + 8])
                if code & 0x07 == 0x05:  # BPF_JMP
                    assert position // 8 + 1 + max(jt, jf) < len(program) // 8


# -- an unprivileged user with hundreds of processes ------------------------------------------
UNPRIVILEGED = 65534
VENV = pathlib.Path("/tmp") / f"tc_grader_unprivileged_venv_{sys.version_info.major}{sys.version_info.minor}"


@pytest.fixture(scope="session")
def unprivileged_python():
    """A Python that uid 65534 can run, with what the grader needs outside nbgrader.

    The test suite's own Python may live where that user cannot read (pyenv under /root, mode
    700); a venv from Debian's /usr/bin/python3 with numpy and pytest installed is built once
    and kept for later runs. Skips (with the reason) where it cannot be built."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    readable = (
        subprocess.run(
            [
                "setpriv",
                f"--reuid={UNPRIVILEGED}",
                f"--regid={UNPRIVILEGED}",
                "--clear-groups",
                "test",
                "-r",
                str(SOLUTION),
            ],
            check=False,
        ).returncode
        == 0
    )
    if not readable:
        pytest.skip(f"uid {UNPRIVILEGED} cannot read this checkout ({ROOT}); put it under a world-readable path")
    base = shutil.which("python3", path="/usr/bin") or sys.executable
    python = VENV / "bin" / "python"
    ready = VENV / ".tc_ready"
    if not ready.exists():
        try:
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run([base, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "numpy>=1.26",
                    "pytest>=8",
                    "nbformat>=5.10",
                    "tqdm>=4.66",
                    "fastjsonschema>=2.18",
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (OSError, subprocess.SubprocessError) as error:
            pytest.skip(f"could not build a Python for uid {UNPRIVILEGED}: {error}")
        ready.write_text("ok")
    subprocess.run(["chmod", "-R", "a+rX", str(VENV)], check=True)
    return python


def as_unprivileged(python, args, workdir, extra_env=None):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        **(extra_env or {}),
    }
    return subprocess.run(
        ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups", str(python), *args],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=300,
    )


@pytest.fixture
def crowded():
    """300 sleeping processes of uid 65534, as on a busy desktop or a JupyterHub node, and a
    working directory that user can reach (pytest's tmp_path is under a mode-700 directory)."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tc_unprivileged_"))
    os.chmod(workdir, 0o777)
    sleepers = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={UNPRIVILEGED}",
            f"--regid={UNPRIVILEGED}",
            "--clear-groups",
            "sh",
            "-c",
            "for i in $(seq 300); do sleep 300 & done; wait",
        ],
        start_new_session=True,
    )
    try:
        yield workdir
    finally:
        os.killpg(sleepers.pid, 9)
        sleepers.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _count_processes(uid):
    count = 0
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                count += 1
        except OSError:
            pass
    return count


ATTACK_CELL = """
import os, socket, time
def spawn():
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(1)
            os._exit(0)
for action in (lambda: socket.create_connection(("127.0.0.1", PORT), timeout=0.5),
               lambda: open(MARKER, "w").write("escaped"), spawn):
    try:
        action()
    except OSError:
        pass
"""


@pytest.mark.slow
def test_unprivileged_user_with_hundreds_of_processes_gets_full_marks_in_every_tier(
    unprivileged_python, crowded, sandbox_start
):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    deadline = 100
    while _count_processes(UNPRIVILEGED) < 300 and deadline:
        __import__("time").sleep(0.05)
        deadline -= 1
    assert _count_processes(UNPRIVILEGED) >= 300
    marker = crowded / "escaped.txt"
    hostile = json.loads(SOLUTION.read_text())
    hostile["cells"].append(
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "attack",
            "metadata": {},
            "outputs": [],
            "source": f"PORT = {port}\nMARKER = {str(marker)!r}\n" + ATTACK_CELL,
        }
    )
    hostile_path = crowded / "virtual_head.ipynb"
    hostile_path.write_text(json.dumps(hostile))
    os.chmod(hostile_path, 0o644)
    probe = as_unprivileged(
        unprivileged_python,
        [
            "-c",
            "from autograder.sandbox import supervisor as sandbox; import json; "
            "print(json.dumps(sandbox.tier_status()))",
        ],
        crowded,
    )
    assert probe.returncode == 0, probe.stderr
    tiers = [tier for tier, reason in json.loads(probe.stdout).items() if reason is None]
    assert "unisolated" in tiers and (sys.platform != "linux" or "landlock" in tiers or LANDLOCK_REASON)
    start = {sandbox.WARM_SETTING: "1" if sandbox_start == "warm" else "0"}
    for tier in tiers:
        done = as_unprivileged(
            unprivileged_python,
            [
                "-m",
                "autograder",
                "grade",
                "--course",
                str(ROOT),
                "--json",
                "--isolation",
                tier,
                "--allow-unisolated",
                str(SOLUTION),
            ],
            crowded,
            start,
        )
        assert done.returncode == 0, (tier, done.stdout[-2000:], done.stderr[-2000:])
        report = json.loads(done.stdout)
        assert (report["score"], report["max_score"], report["isolation"]) == (13.0, 13.0, tier), report
        warm_child = sandbox_start == "warm" and tier != "unisolated"
        assert report["isolation_details"]["interpreter"].startswith("warm" if warm_child else "fresh"), report
        if tier != "unisolated":  # the plain process has the user's rights by design
            attacked = as_unprivileged(
                unprivileged_python,
                ["-m", "autograder", "grade", "--course", str(ROOT), "--json", "--isolation", tier, str(hostile_path)],
                crowded,
                start,
            )
            assert attacked.returncode == 0, (tier, attacked.stderr[-2000:])
            assert json.loads(attacked.stdout)["score"] == 13.0
            assert not marker.exists() and not accepted, tier
    checked = as_unprivileged(unprivileged_python, ["-m", "autograder", "check", str(SOLUTION)], crowded)
    assert checked.returncode == 0 and "autograded total: 13/13" in checked.stdout, checked.stdout + checked.stderr
    listener.close()


# -- CPU time, not only wall time -----------------------------------------------------------
@pytest.mark.parametrize("tier", AVAILABLE)
def test_cell_limits_count_cpu_time_so_waiting_is_not_a_timeout(tier):
    """A cell that waits 1.5 s (as a correct cell does on a host slowed by its neighbours) is not
    cut at its 1 s limit, since the limit counts CPU time; one that computes for as long is.
    RLIMIT_CPU bounds the whole run, in every process of it."""
    limits = sandbox.Limits(
        cell_seconds=1, cell_grace_seconds=1, call_seconds=1, total_seconds=20, memory_bytes=512 << 20, wall_factor=3
    )
    cells = [
        "import time\ntime.sleep(1.5)\nwaited = 'done'",
        "spun = 'interrupted'\nwhile True:\n    pass\nspun = 'never'",
        "import resource\ncpu = str(resource.getrlimit(resource.RLIMIT_CPU)[0])",
    ]
    result, values = run(cells, tier, names=("waited", "spun", "cpu"), limits=limits)
    assert [cell["status"] for cell in result.cells] == ["ok", "timeout", "ok"]
    assert values == {"waited": "done", "spun": "interrupted", "cpu": "20"}


def test_each_sandbox_gets_its_own_cpu_share_where_cgroups_allow():
    groups = Cgroups(sandbox.Limits())
    try:
        if not groups.paths:
            pytest.skip(f"no cgroup can be created here: {sandbox.cgroup_v2_parent()[1]}")
        assert groups.v2 or {"pids", "memory", "cpu"} <= set(groups.controllers())
    finally:
        groups.kill_and_remove()


@requires_bwrap
def test_bubblewrap_without_a_memory_cgroup_allows_no_second_process(monkeypatch):
    """Where no memory cgroup can be made (non-root, undelegated cgroup v2), RLIMIT_AS is the
    only memory cap and binds each process: the student half then gets no process to spare."""
    monkeypatch.setattr(Cgroups, "__init__", lambda self, limits: setattr(self, "paths", []))
    code = (
        "import os, subprocess\nrefused = []\n"
        "for name, action in (('fork', os.fork), ('subprocess', lambda: subprocess.run(['true']))):\n"
        "    try:\n        action()\n    except OSError:\n        refused.append(name)\n"
        "result = refused"
    )
    _, values = run(code, "bubblewrap")
    assert values["result"] == ["fork", "subprocess"]


@pytest.mark.slow
def test_batch_leaves_students_ungraded_on_grader_errors_and_the_rerun_grades_them(
    tmp_path, monkeypatch, capsys, mini_class
):
    """Not a 0 in the gradebook: no grade at all, no 'graded' marker, exit 3 and the reason on
    stderr; once the fault is fixed, the next run grades exactly those students."""
    real_driver = sandbox.DRIVER_DIR
    broken_driver(
        tmp_path,
        monkeypatch,
        confine_source=("\ndef confine(plan):\n    raise ConfinementError('RLIMIT_CPU could not be set (test)')\n"),
    )
    assert run_batch(mini_class) == 3
    err = capsys.readouterr().err
    assert "RLIMIT_CPU could not be set" in err and "NOT graded" in err
    flagged = ("ada", "bob", "cy", "eve")  # dee's notebook is not JSON: her 0 is her file's, with its reason
    assert not any((mini_class / "autograded" / student / "mini" / ".autograder.json").exists() for student in flagged)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{mini_class / 'gradebook.db'}", "transformer-circuits") as gradebook:
        for student in flagged:
            notebook = gradebook.find_submission_notebook("mini", "mini", student)
            assert all(grade.auto_score is None and grade.needs_manual_grade for grade in notebook.grades), student
            assert all("NOT GRADED, grader error: " in comment.auto_comment for comment in notebook.comments)
    monkeypatch.setattr(tiers, "DRIVER_DIR", real_driver)
    assert run_batch(mini_class) == 0
    assert auto_scores(mini_class)["ada"] == {"mini_matrix": 2, "mini_function": 2, "mini_why": 0}


def test_nbgrader_autograde_fails_the_submission_on_grader_errors_and_has_no_unsandboxed_option(tmp_path, monkeypatch):
    """nbgrader reports a preprocessor's exception as a failed submission and leaves its grades
    unset: what a grader fault must be there. And no configuration selects unsandboxed running."""
    import nbformat

    from autograder.nbgrader import preprocessors as nbgrader_bridge

    options = nbgrader_bridge.SandboxedGrading.class_trait_names(config=True)
    assert "runner" not in options and {"isolation", "allow_unisolated"} <= set(options)
    broken_driver(
        tmp_path,
        monkeypatch,
        confine_source=("\ndef confine(plan):\n    raise ConfinementError('seccomp filter refused (test)')\n"),
    )
    nb = nbformat.read(str(SOLUTION), as_version=4)
    resources = {"nbgrader": {"assignment": "attention_heads", "notebook": "virtual_head", "student": "ada"}}
    with pytest.raises(RuntimeError, match="grader error, ada/virtual_head not graded: .*seccomp filter refused"):
        step = nbgrader_bridge.SandboxedGrading()
        step.course = REPOSITORY
        step.preprocess(nb, resources)
    unisolated = nbgrader_bridge.SandboxedGrading(isolation="unisolated")
    unisolated.course = REPOSITORY
    with pytest.raises(sandbox.SandboxUnavailable, match="--allow-unisolated"):
        unisolated.preprocess(nbformat.read(str(SOLUTION), as_version=4), resources)


@requires_bwrap
def test_bubblewrap_where_nproc_counts_the_whole_user_sets_none_and_allows_no_second_process(monkeypatch):
    """Before Linux 5.14 RLIMIT_NPROC counted every process of the real user, namespaces or not."""
    monkeypatch.setattr(tiers, "nproc_counts_per_namespace", lambda: False)
    code = (
        "import os, resource\nresult = [str(resource.getrlimit(resource.RLIMIT_NPROC)[0])]\n"
        "try:\n    os.fork()\nexcept OSError:\n    result.append('fork refused')\n"
    )
    _, values = run(code, "bubblewrap")
    assert values["result"][1:] == ["fork refused"] and values["result"][0] != str(LIMITS.max_processes)


def test_the_landlock_tier_works_wherever_the_kernel_has_landlock():
    """The tier's own probe must pass on a kernel with Landlock, whatever Python runs the grader
    (a venv of the system's Python keeps no capability when it drops to the sandbox's uid): a
    failing probe would otherwise only skip the landlock column of every threat test."""
    try:
        abi = confine.landlock_abi()
    except confine.ConfinementError as error:
        pytest.skip(f"no Landlock here: {error}")
    assert abi >= 1
    assert sandbox.probe_landlock() is None
