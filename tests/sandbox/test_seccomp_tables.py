"""The seccomp filter's syscall numbers and what it decides, per architecture it claims.

The filter (sandbox/driver/confine.py) is a list of numbers: a wrong one on aarch64 would refuse
some harmless call and let the dangerous one through, and nothing on an x86_64 machine would
notice. So every number is checked against the kernel's own UAPI headers on this machine, read
by the C preprocessor (x86_64: asm/unistd_64.h; aarch64: its asm/unistd.h from the cross
headers when installed, else asm-generic/unistd.h with the __ARCH_WANT_* switches that file
sets), and the audit architecture values against linux/audit.h. Then the program itself runs,
for each architecture, in a small classic-BPF interpreter here: each refused call gets its
errno, the process rules look at the right argument, everyday calls pass, and a call made
under another architecture's convention kills the process.
"""

from __future__ import annotations

import errno
import pathlib
import re
import shutil
import struct
import subprocess

import pytest

from autograder.sandbox.driver import confine

AARCH64_CROSS = pathlib.Path("/usr/aarch64-linux-gnu/include")
# arch/arm64/include/uapi/asm/unistd.h: these switches, then asm-generic/unistd.h.
AARCH64_WANTS = ("RENAMEAT", "NEW_STAT", "SET_GET_RLIMIT", "TIME32_SYSCALLS", "SYS_CLONE3", "MEMFD_SECRET")
# Calls the filter names beyond _DENIED (the process and signal rules, socketpair).
RULED = ("fork", "vfork", "clone", "clone3", "kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "socketpair")
EVERYDAY = ("read", "write", "openat", "close", "mmap", "munmap", "futex", "exit_group", "getpid", "rt_sigaction")


def _macros(source: str, *arguments: str) -> dict[str, str]:
    if shutil.which("cpp") is None:
        pytest.skip("no C preprocessor (cpp) to read the kernel headers with")
    done = subprocess.run(["cpp", "-dM", *arguments, "-"], input=source, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"the kernel headers cannot be read here (apt-get install linux-libc-dev): {done.stderr[-300:]}")
    return dict(re.findall(r"^#define (\w+) (.*)$", done.stdout, re.MULTILINE))


def _value(macros: dict[str, str], name: str) -> int:
    """A macro's integer value: numbers, other macros, and | of them (all these headers use)."""
    expression = macros[name]
    for _ in range(10):
        expression = re.sub(r"[A-Za-z_]\w*", lambda match: macros.get(match.group(0), match.group(0)), expression)
    if not re.fullmatch(r"[0-9a-fA-FxX|() ]+", expression):
        raise ValueError(f"{name} = {macros[name]} is not a plain number")
    value = 0
    for part in expression.replace("(", " ").replace(")", " ").split("|"):
        value |= int(part.strip(), 0)
    return value


def header_syscalls(machine: str) -> tuple[dict[str, int], str]:
    """{name: number} of every __NR_ macro for `machine`, and which header it came from."""
    if machine == "x86_64":
        macros, source = _macros("#include <asm/unistd_64.h>\n"), "asm/unistd_64.h"
    elif (AARCH64_CROSS / "asm" / "unistd.h").exists():
        macros = _macros("#include <asm/unistd.h>\n", "-nostdinc", "-isystem", str(AARCH64_CROSS))
        source = f"{AARCH64_CROSS}/asm/unistd.h"
    else:
        wants = "".join(f"#define __ARCH_WANT_{want}\n" for want in AARCH64_WANTS)
        macros, source = _macros(wants + "#include <asm-generic/unistd.h>\n"), "asm-generic/unistd.h"
    numbers = {}
    for name in macros:
        if name.startswith("__NR_") and not name.startswith("__NR3264"):
            try:
                numbers[name[5:]] = _value(macros, name)
            except (ValueError, KeyError):
                continue  # __NR_syscalls and the like
    return numbers, source


@pytest.fixture(scope="module", params=sorted(confine.SYSCALLS))
def machine(request):
    return request.param


@pytest.fixture(scope="module")
def header(machine):
    return header_syscalls(machine)


def test_the_architectures_claimed_are_the_ones_with_tables():
    assert set(confine.SYSCALLS) == set(confine.AUDIT_ARCH) == set(confine._LANDLOCK_SYSCALLS) == {"x86_64", "aarch64"}


def test_every_number_is_the_kernels(machine, header):
    numbers, source = header
    table = confine.SYSCALLS[machine]
    wrong = {name: (number, numbers.get(name)) for name, number in table.items() if numbers.get(name) != number}
    assert not wrong, f"{machine}: (ours, {source}'s): {wrong}"
    landlock = tuple(numbers[f"landlock_{name}"] for name in ("create_ruleset", "add_rule", "restrict_self"))
    assert confine._LANDLOCK_SYSCALLS[machine] == landlock


def test_every_call_the_filter_means_to_rule_on_has_a_number_where_the_kernel_has_it(machine, header):
    """A name missing from a table is silently not filtered: every refused call must have its
    number wherever the architecture has the call (aarch64 has no fork or vfork: clone only)."""
    numbers, source = header
    table = confine.SYSCALLS[machine]
    for name in (*confine._DENIED, *RULED):
        assert (name in table) == (name in numbers), f"{machine}: {name} in {source}: {name in numbers}"
    assert set(confine._DENIED) <= set(table)
    if machine == "aarch64":
        assert "fork" not in numbers and "vfork" not in numbers and "clone3" in numbers


def test_audit_architectures_are_the_kernels():
    macros = _macros("#include <linux/audit.h>\n")
    assert confine.AUDIT_ARCH == {
        "x86_64": _value(macros, "AUDIT_ARCH_X86_64"),
        "aarch64": _value(macros, "AUDIT_ARCH_AARCH64"),
    }


# -- the program, run -------------------------------------------------------------------------
def run_filter(program: bytes, arch: int, number: int, arg0: int = 0) -> int:
    """What a classic-BPF seccomp program returns for one call (the instructions it uses)."""
    data = struct.pack("=iIQ6Q", number, arch, 0, arg0, 0, 0, 0, 0, 0)
    instructions = [struct.unpack("=HBBI", program[at : at + 8]) for at in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = instructions[pc]
        pc += 1
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            accumulator = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        elif code in (0x15, 0x35, 0x45):  # BPF_JMP | JEQ, JGE, JSET, against K
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
            pc += jt if taken else jf
        else:
            raise AssertionError(f"instruction {code:#x} is not one this interpreter knows")


ALLOW, KILL = 0x7FFF0000, 0x80000000


def refused(code: int) -> int:
    return 0x00050000 | code


@pytest.mark.parametrize("no_new_processes", [False, True], ids=["base", "student_half"])
def test_the_program_decides_per_call(machine, header, no_new_processes):
    numbers, _ = header
    own = 4242
    program = confine.seccomp_program(machine, no_new_processes, own_pid=own)
    arch = confine.AUDIT_ARCH[machine]

    def decision(name, arg0=0):
        return run_filter(program, arch, numbers[name], arg0)

    for name in confine._DENIED:
        assert decision(name) == refused(errno.EACCES if name == "socket" else errno.EPERM), name
    for name in EVERYDAY:
        assert decision(name) == ALLOW, name
    assert decision("socketpair", 1) == ALLOW  # AF_UNIX: the pipes Python itself may need
    assert decision("socketpair", 2) == refused(errno.EPERM)  # AF_INET
    thread = 0x00010000 | 0x00000100 | 0x00000800  # CLONE_THREAD | CLONE_VM | CLONE_SIGHAND
    assert decision("clone", thread) == ALLOW
    if no_new_processes:
        assert decision("clone", 17) == refused(errno.EPERM)  # SIGCHLD: what fork() becomes
        assert decision("clone3") == refused(errno.ENOSYS)  # so that libc falls back to clone
        for name in ("fork", "vfork"):
            if name in numbers:
                assert decision(name) == refused(errno.EPERM)
        for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            assert decision(name, own) == ALLOW and decision(name, 1) == refused(errno.EPERM), name
    else:
        assert decision("clone", 17) == ALLOW and decision("kill", 1) == ALLOW


def test_calls_under_another_architectures_convention_kill_the_process(machine, header):
    numbers, _ = header
    program = confine.seccomp_program(machine, True, own_pid=1)
    macros = _macros("#include <linux/audit.h>\n")
    other = _value(macros, "AUDIT_ARCH_I386" if machine == "x86_64" else "AUDIT_ARCH_ARM")
    assert run_filter(program, other, numbers["read"]) == KILL  # 32-bit entry points number calls differently
    if machine == "x86_64":  # the x32 ABI: the same calls, numbered from 0x40000000
        assert run_filter(program, confine.AUDIT_ARCH[machine], 0x40000000 | numbers["ptrace"]) == refused(errno.EPERM)
