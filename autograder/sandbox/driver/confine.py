"""Confinement the driver applies to itself inside the sandbox: rlimits, uid, Landlock, seccomp.

Stdlib and ctypes only: this module is imported inside the sandbox, where only the driver's
directory is guaranteed. Every function raises `ConfinementError` (with the reason, in the
instructor's terms) when a limit cannot be set: a sandbox that is weaker than promised must
not run student code, and the supervisor reports that as a grader error, never as a score.

The kernel interfaces used, all documented ABI:
  * setrlimit(2) through `resource`;
  * Landlock (landlock_create_ruleset/add_rule/restrict_self, Documentation/userspace-api/landlock.rst):
    file access beneath the allowed trees only; from ABI 4 no TCP bind/connect, from ABI 6
    signals and abstract unix sockets scoped to the sandbox;
  * seccomp(2) with a classic-BPF filter (Documentation/userspace-api/seccomp_filter.rst),
    built here as a flat list of "syscall number -> errno" tests;
  * prctl(2) PR_SET_NO_NEW_PRIVS / PR_SET_KEEPCAPS / PR_SET_DUMPABLE and capset(2).
"""

import ctypes
import errno
import os
import resource
import struct
import sys

IS_LINUX = sys.platform.startswith("linux")


class ConfinementError(Exception):
    """A limit or restriction could not be put in place; the message says which and why."""


_LIBC: list = []  # the C library, loaded on first use


def _libc():
    # The symbols already loaded into this process (libc among them): ctypes.util.find_library
    # would start ldconfig, a subprocess costing tens of milliseconds per sandbox.
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _check(result, what):
    if result < 0 if isinstance(result, int) else False:
        code = ctypes.get_errno()
        raise ConfinementError(f"{what} failed: {os.strerror(code)} (errno {code})")
    return result


# -- resource limits -------------------------------------------------------------------------
RLIMITS = {
    "as": "RLIMIT_AS",
    "fsize": "RLIMIT_FSIZE",
    "nofile": "RLIMIT_NOFILE",
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "nproc": "RLIMIT_NPROC",
}


def set_rlimits(limits, optional=()):
    """Lower each named limit ({"as": (soft, hard), ...}) for this process and its children.

    A limit this platform does not have or cannot lower is an error, unless it is named in
    `optional` (the plain-process tier on macOS, which promises no memory cap): the caller asked
    for it because the tier promises it.
    """
    for name, (soft, hard) in limits.items():
        constant = getattr(resource, RLIMITS[name], None)
        if constant is None:
            if name in optional:
                continue
            raise ConfinementError(f"this platform has no {RLIMITS[name]}")
        current_soft, current_hard = resource.getrlimit(constant)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)  # never try to raise a limit the host already set
            soft = min(soft, hard)
        try:
            resource.setrlimit(constant, (soft, hard))
        except (ValueError, OSError) as error:
            if name in optional:
                continue
            raise ConfinementError(f"could not set {RLIMITS[name]} to {soft}: {error}") from None


# -- prctl -------------------------------------------------------------------------------------
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
SECCOMP_MODE_FILTER = 2


def _prctl(option, arg):
    libc = _libc()
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _check(libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def make_undumpable():
    """No ptrace and no /proc/<pid>/fd of this process by its own uid (Linux only)."""
    if IS_LINUX:
        _prctl(PR_SET_DUMPABLE, 0)


def set_child_subreaper():
    """Orphaned descendants of this process become its children (so it can reap them all)."""
    if IS_LINUX:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)


# -- dropping root ----------------------------------------------------------------------------
CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_root(uid, gid, keep_read_search):
    """Become `uid`/`gid` with no supplementary groups and no capabilities.

    `keep_read_search` keeps CAP_DAC_READ_SEARCH alone (effective and permitted, not
    inheritable), for a Python installed where `uid` cannot read it (pyenv under /root, mode
    700): what it may read is then bounded by the Landlock ruleset applied right after, and
    open_by_handle_at, the one call that would use the capability outside that ruleset, is
    refused by the seccomp filter. The capability is lost on any exec.
    """
    libc = _libc()
    if keep_read_search:
        _prctl(PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as error:
        raise ConfinementError(f"could not switch to uid {uid}: {error}") from None
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if keep_read_search:
        data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
    _check(libc.capset(ctypes.byref(header), data), "capset")
    if keep_read_search:
        _prctl(PR_SET_KEEPCAPS, 0)
    if os.getuid() != uid or os.geteuid() != uid:
        raise ConfinementError(f"still running as uid {os.geteuid()} after switching to {uid}")


# -- Landlock ---------------------------------------------------------------------------------
_LANDLOCK_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
# Access rights each ABI version adds to what a ruleset can handle (and so deny).
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _machine():
    # os.uname, not the platform module: importing that costs ~10 ms per sandbox start.
    machine = os.uname().machine.lower() if hasattr(os, "uname") else ""
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def landlock_abi():
    """The Landlock ABI version this kernel offers; raises ConfinementError saying why none."""
    if not IS_LINUX:
        raise ConfinementError(f"Landlock is Linux-only (this is {sys.platform})")
    numbers = _LANDLOCK_SYSCALLS.get(_machine())
    if numbers is None:
        raise ConfinementError(f"no Landlock syscall numbers known for {_machine()}")
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(
        ctypes.c_long(numbers[0]), None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
    )
    if version < 0:
        code = ctypes.get_errno()
        why = {
            errno.ENOSYS: "the kernel has no Landlock (Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)",
            errno.EOPNOTSUPP: "Landlock is built in but not enabled (add landlock to the lsm= boot parameter)",
        }
        raise ConfinementError(why.get(code, f"landlock_create_ruleset failed: {os.strerror(code)}"))
    return int(version)


def apply_landlock(read_paths, write_paths, read_write_files=()):
    """Restrict this process (and all it starts) to reading `read_paths`, writing `write_paths`.

    Everything else on the file system is denied, and so are TCP bind and connect (ABI 4) and
    signals or abstract unix sockets reaching outside the sandbox (ABI 6). Returns the ABI used.
    """
    abi = landlock_abi()
    create, add_rule, restrict = _LANDLOCK_SYSCALLS[_machine()]
    fs_rights = _FS_RIGHTS_BY_ABI[max(version for version in _FS_RIGHTS_BY_ABI if version <= abi)]
    attr = _RulesetAttr(
        fs_rights,
        NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0,
    )
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    ruleset = _check(
        libc.syscall(ctypes.c_long(create), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
        "landlock_create_ruleset",
    )
    try:
        file_rights = FS_EXECUTE | FS_READ_FILE | FS_WRITE_FILE | (1 << 14 if abi >= 3 else 0)
        rules = [(path, FS_READ) for path in read_paths] + [(path, fs_rights) for path in write_paths]
        rules += [(path, FS_READ_FILE | FS_WRITE_FILE) for path in read_write_files]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # an optional path (/etc/fonts, a lib64 link target) this host lacks
            try:
                if not os.path.isdir(path):
                    rights &= file_rights  # directory-only rights are refused on a file
                beneath = _PathBeneathAttr(rights, fd)
                _check(
                    libc.syscall(
                        ctypes.c_long(add_rule),
                        ctypes.c_int(ruleset),
                        ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                        ctypes.byref(beneath),
                        ctypes.c_uint32(0),
                    ),
                    f"landlock_add_rule({path})",
                )
            finally:
                os.close(fd)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check(
            libc.syscall(ctypes.c_long(restrict), ctypes.c_int(ruleset), ctypes.c_uint32(0)), "landlock_restrict_self"
        )
    finally:
        os.close(ruleset)
    return abi


# -- seccomp ----------------------------------------------------------------------------------
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Calls refused in the no-namespace tier: other processes' memory, mounts, namespaces, the
# kernel keyring, eBPF, io_uring (which bypasses seccomp for the operations it queues), kernel
# modules, handle-based opens (they skip path checks), and clock or system-wide settings.
_DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "process_mrelease",
    "kcmp",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "quotactl",
    "quotactl_fd",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "tkill",
    "socket",
)
# Per architecture, from the kernel's UAPI headers (x86_64: asm/unistd_64.h; aarch64, which
# has no fork or vfork: asm-generic/unistd.h); tests/sandbox/test_seccomp_tables.py checks every
# number, and every call the filter means to refuse, against those headers.
SYSCALLS = {
    "x86_64": {
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "process_madvise": 440,
        "process_mrelease": 448,
        "kcmp": 312,
        "pidfd_open": 434,
        "pidfd_getfd": 438,
        "pidfd_send_signal": 424,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        "unshare": 272,
        "setns": 308,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "move_mount": 429,
        "open_tree": 428,
        "mount_setattr": 442,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "bpf": 321,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "open_by_handle_at": 304,
        "name_to_handle_at": 303,
        "quotactl": 179,
        "quotactl_fd": 443,
        "acct": 163,
        "swapon": 167,
        "swapoff": 168,
        "reboot": 169,
        "settimeofday": 164,
        "clock_settime": 227,
        "tkill": 200,
        "socket": 41,
        "socketpair": 53,
        "clone": 56,
        "clone3": 435,
        "fork": 57,
        "vfork": 58,
        "kill": 62,
        "tgkill": 234,
        "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297,
    },
    "aarch64": {
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "process_madvise": 440,
        "process_mrelease": 448,
        "kcmp": 272,
        "pidfd_open": 434,
        "pidfd_getfd": 438,
        "pidfd_send_signal": 424,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "chroot": 51,
        "unshare": 97,
        "setns": 268,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "move_mount": 429,
        "open_tree": 428,
        "mount_setattr": 442,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "bpf": 280,
        "perf_event_open": 241,
        "userfaultfd": 282,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "open_by_handle_at": 265,
        "name_to_handle_at": 264,
        "quotactl": 60,
        "quotactl_fd": 443,
        "acct": 89,
        "swapon": 224,
        "swapoff": 225,
        "reboot": 142,
        "settimeofday": 170,
        "clock_settime": 112,
        "tkill": 130,
        "socket": 198,
        "socketpair": 199,
        "clone": 220,
        "clone3": 435,
        "kill": 129,
        "tgkill": 131,
        "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240,
    },
}
AF_UNIX = 1
CLONE_THREAD = 0x00010000
_X32_SYSCALL_BIT = 0x40000000

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data (arg0's low 32 bits)


def _op(code, k, jt=0, jf=0):
    return struct.pack("=HBBI", code, jt, jf, k)


def _errno(code):
    return _RET_ERRNO | code


def seccomp_program(machine, no_new_processes=False, own_pid=None):
    """The classic-BPF program, as bytes of struct sock_filter.

    Base rules: the calls in _DENIED fail with EPERM (socket() with EACCES, so that no socket
    of any family, pathname unix sockets included, can be opened; socketpair is allowed for
    AF_UNIX only). With `no_new_processes`, fork, vfork and clone without CLONE_THREAD fail
    (threads stay possible; clone3 answers ENOSYS so that libc falls back to clone), and
    signals may be sent only to `own_pid`: the student half then owns exactly one process.
    """
    numbers = SYSCALLS[machine]
    ops = [
        _op(_LD_W_ABS, _OFFSET_ARCH),
        _op(_JEQ, AUDIT_ARCH[machine], 1, 0),
        _op(_RET, _RET_KILL_PROCESS),
        _op(_LD_W_ABS, _OFFSET_NR),
    ]
    if machine == "x86_64":  # the x32 ABI would reach the same calls under other numbers
        ops += [_op(_JGE, _X32_SYSCALL_BIT, 0, 1), _op(_RET, _errno(errno.EPERM))]

    def deny(name, code=errno.EPERM):
        if name in numbers:
            ops.extend([_op(_JEQ, numbers[name], 0, 1), _op(_RET, _errno(code))])

    def allow_if_arg0(name, test, value, code=errno.EPERM):
        """`name` is allowed when arg0 passes `test` (_JEQ or _JSET) against `value`."""
        if name in numbers:
            ops.extend(
                [
                    _op(_JEQ, numbers[name], 0, 4),
                    _op(_LD_W_ABS, _OFFSET_ARG0),
                    _op(test, value, 1, 0),
                    _op(_RET, _errno(code)),
                    _op(_RET, _RET_ALLOW),
                ]
            )

    for name in _DENIED:
        deny(name, errno.EACCES if name == "socket" else errno.EPERM)
    if no_new_processes:
        deny("fork")
        deny("vfork")
        deny("clone3", errno.ENOSYS)
        allow_if_arg0("clone", _JSET, CLONE_THREAD)
        for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            allow_if_arg0(name, _JEQ, own_pid)
    allow_if_arg0("socketpair", _JEQ, AF_UNIX)  # last: it leaves arg0 in the accumulator
    ops.append(_op(_RET, _RET_ALLOW))
    return b"".join(ops)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_machine():
    """The architecture name the filter is built for; raises ConfinementError saying why none."""
    if not IS_LINUX:
        raise ConfinementError(f"seccomp is Linux-only (this is {sys.platform})")
    machine = _machine()
    if machine not in SYSCALLS:
        raise ConfinementError(f"no seccomp syscall table for {machine} (known: {', '.join(SYSCALLS)})")
    return machine


def apply_seccomp(no_new_processes=False):
    """Install the filter on this process; it is inherited by every thread and child."""
    machine = seccomp_machine()
    program = seccomp_program(machine, no_new_processes, os.getpid())
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    libc = _libc()
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "installing the seccomp filter")


# -- scratch folders -----------------------------------------------------------------------------
def remove_tree(path):
    """Remove a sandbox's scratch folder, whatever modes its code left on the folders inside
    (a folder made unwritable or unreadable by its owner would otherwise survive the run and
    keep its files, and its space, for the next one). Links are never followed."""
    import shutil

    try:
        os.chmod(path, 0o700, follow_symlinks=False)
    except (OSError, NotImplementedError):
        pass
    for root, folders, _files in os.walk(path):
        for folder in folders:
            try:
                os.chmod(os.path.join(root, folder), 0o700, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
    shutil.rmtree(path, ignore_errors=True)


# -- one entry point for the driver -----------------------------------------------------------
def confine(plan):
    """Apply the supervisor's plan (a plain dict from the job frame) to this process, in order:
    rlimits (while still allowed to), the uid switch, Landlock, the base seccomp filter.
    Returns a short description of what is in force."""
    applied = []
    if plan.get("rlimits"):
        set_rlimits({name: tuple(pair) for name, pair in plan["rlimits"].items()}, plan.get("optional_rlimits", ()))
        applied.append("rlimits")
    if plan.get("drop_to"):
        uid, gid, keep = plan["drop_to"]
        drop_root(uid, gid, keep)
        applied.append(f"uid {uid}")
    if plan.get("undumpable"):  # after the uid switch, which may reset the flag
        make_undumpable()
    if plan.get("landlock"):
        spec = plan["landlock"]
        abi = apply_landlock(spec["read"], spec["write"], spec.get("read_write_files", ()))
        applied.append(f"landlock ABI {abi}")
    if plan.get("seccomp"):
        apply_seccomp()
        applied.append("seccomp")
    return ", ".join(applied)
