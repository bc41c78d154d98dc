"""Untrusted programs in the sandbox: real child processes, real limits, no mocks."""

from __future__ import annotations

import os
import resource
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from harness.stages.evaluate import sandbox
from harness.stages.evaluate.sandbox import BWRAP_ISOLATION, MAX_TASKS, SANDBOX_UID, SHM_BYTES, WORK_DIR, run_untrusted

# A builtin module made afresh has the real functions the guard replaced: the way past it.
_UNGUARDED_POSIX = """
import importlib.machinery, importlib.util
spec = importlib.machinery.BuiltinImporter.find_spec("posix")
posix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(posix)
"""


def _marker() -> str:
    return f"sandbox-marker-{uuid.uuid4().hex}"


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in arg for arg in proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


def _kernel_caps_processes() -> bool:
    return "pids-cgroup" in run_untrusted("pass").isolation


def test_passing_program_passes() -> None:
    result = run_untrusted("assert 1 + 1 == 2")
    assert result.passed and result.status == "passed" and result.detail == ""


def test_failing_assert_fails() -> None:
    result = run_untrusted("def f():\n    return 3\n\nassert f() == 2, 'wrong answer'")
    assert not result.passed and result.status == "failed"
    assert result.detail == "AssertionError: wrong answer"
    assert 'File "<program>", line 4' in result.stderr


def test_infinite_loop_times_out() -> None:
    result = run_untrusted("while True: pass", timeout_s=2)
    assert result.status == "timeout" and not result.passed
    assert 2 <= result.wall_s < 15


def test_sleeping_program_times_out_on_the_wall_clock() -> None:
    result = run_untrusted("import time\ntime.sleep(60)", timeout_s=2)  # no CPU time: only the wall clock stops it
    assert result.status == "timeout" and result.detail == "timed out after 2 s"
    assert result.wall_s < 15


def test_fork_bomb_is_contained() -> None:
    marker = _marker()
    result = run_untrusted(f"import os\n# {marker}\nwhile True: os.fork()", timeout_s=2)
    assert not result.passed
    assert result.wall_s < 15
    assert _processes_with(marker) == []


def test_fork_bomb_past_the_guard_is_capped_by_the_kernel() -> None:
    if not _kernel_caps_processes():
        pytest.skip("no pids cgroup here, and RLIMIT_NPROC does not hold root: an uncapped bomb would hit the host")
    marker = _marker()
    bomb = f"""{_UNGUARDED_POSIX}
# {marker}
while True:
    try:
        if posix.fork() == 0:
            posix.write(1, b"forked\\n")
    except OSError:
        pass
"""
    result = run_untrusted(bomb, timeout_s=2)
    assert result.status == "timeout"
    assert 0 < result.stdout.count("forked") < MAX_TASKS  # it forked, up to the cap only
    assert _processes_with(marker) == []


def test_process_left_behind_is_killed() -> None:
    marker = _marker()
    daemon = f"""{_UNGUARDED_POSIX}
# {marker}
if posix.fork() == 0:
    posix.setsid()  # leaves the sandbox's process group; its parent exits at once
    import time
    time.sleep(60)
"""
    result = run_untrusted(daemon)
    assert result.passed
    assert _processes_with(marker) == []


@pytest.mark.parametrize(
    "hog",
    ["x = bytearray(4 * 1024**3)", "x = []\nwhile True:\n    x.append(' ' * 2**20)"],
    ids=["one-block", "growing"],
)
def test_memory_hog_ends_as_memory(hog: str) -> None:
    limit_before = resource.getrlimit(resource.RLIMIT_AS)
    result = run_untrusted(hog, timeout_s=10, memory_mb=256)
    assert result.status == "memory" and "MemoryError" in result.detail
    assert resource.getrlimit(resource.RLIMIT_AS) == limit_before
    assert len(bytearray(64 * 2**20)) == 64 * 2**20  # this process still allocates freely


@pytest.mark.parametrize(
    "connect",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)",
        "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', PORT))",
        "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', PORT))",  # past the guard
    ],
    ids=["create_connection", "connect", "raw-socket"],
)
def test_network_is_unreachable(connect: str) -> None:
    if connect.startswith("import _socket") and os.geteuid() != 0:
        pytest.skip("only the network namespace stops a raw socket; without root it may be refused")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_untrusted(connect.replace("PORT", str(port)), timeout_s=5)
        assert not result.passed and result.status == "failed"
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_written_files_land_in_the_sandboxs_own_tmpfs() -> None:
    result = run_untrusted(
        "import os\nwith open('out.txt', 'w') as f:\n    f.write('hello')\nprint(os.path.abspath('out.txt'))"
    )
    assert result.passed
    assert result.stdout.strip() == f"{WORK_DIR}/out.txt"
    assert not Path(WORK_DIR).exists()  # the host has no such directory: it was the sandbox's tmpfs


# ---------------------------------------------------------------- the boundary (bubblewrap)
# Each of these escaped the sandbox before it was one (issue 14's reproductions).


def test_the_harness_environment_cannot_be_read_through_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_TEST_TOKEN", "hf_s3cret")
    program = f"""{_UNGUARDED_POSIX}
import os
for pid in [os.getppid(), 1] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:
    try:
        print(open(f'/proc/{{pid}}/environ').read())
    except OSError:
        pass
"""
    result = run_untrusted(program)
    assert result.passed and "hf_s3cret" not in result.stdout and "HARNESS_TEST_TOKEN" not in result.stdout


def test_nothing_outside_can_be_written(tmp_path: Path) -> None:
    target = tmp_path / "escaped.pth"
    for write in (f"open({str(target)!r}, 'w').write('import os')", "open('/usr/escaped', 'w')"):
        result = run_untrusted(write)
        assert result.status == "failed" and ("No such file" in result.detail or "Read-only" in result.detail)
    assert not target.exists() and not Path("/usr/escaped").exists()


def test_the_harness_files_are_not_visible() -> None:
    here = Path(__file__).resolve()
    result = run_untrusted(f"print(open({str(here)!r}).read())")
    assert result.status == "failed" and "No such file" in result.detail


def test_setns_into_the_hosts_network_is_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        program = f"""
import sys
del sys.modules['ctypes'], sys.modules['_ctypes']
import ctypes, os, _socket
libc = ctypes.CDLL(None, use_errno=True)
entered = any(libc.setns(os.open(f'/proc/{{pid}}/ns/net', os.O_RDONLY), 0) == 0
              for pid in (1, os.getppid()) if os.path.exists(f'/proc/{{pid}}/ns/net'))
s = _socket.socket()
s.settimeout(2)
s.connect(('127.0.0.1', {port}))
"""
        result = run_untrusted(program, timeout_s=5)
        assert not result.passed
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_dev_shm_is_a_small_tmpfs_of_its_own() -> None:
    marker = _marker()
    chunk = SHM_BYTES // 2  # files under the file-size limit, more of them than the tmpfs holds
    fill = f"for i in range(4):\n    open(f'/dev/shm/{marker}-{{i}}', 'wb').write(b'x' * {chunk})"
    result = run_untrusted(fill, memory_mb=512)
    assert result.status == "failed" and "No space left on device" in result.detail
    assert not list(Path("/dev/shm").glob(f"{marker}*"))


def test_it_runs_as_nobody_without_capabilities() -> None:
    program = "import os\nprint(os.getuid(), os.getgid())\nprint(open('/proc/self/status').read())"
    result = run_untrusted(program)
    assert result.passed
    assert result.stdout.splitlines()[0] == f"{SANDBOX_UID} {SANDBOX_UID}"
    assert "CapEff:\t0000000000000000" in result.stdout and "NoNewPrivs:\t1" in result.stdout
    assert set(BWRAP_ISOLATION) <= set(result.isolation)


def test_no_sandbox_means_the_program_does_not_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fail closed: without bwrap nothing runs (the old sandbox ran it with whatever it got)."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    sandbox._probe.cache_clear()
    try:
        flag = tmp_path / "ran"
        result = run_untrusted(f"open({str(flag)!r}, 'w')")
        assert result.status == "error" and "not run: no sandbox: bwrap (bubblewrap) is not installed" in result.detail
        assert not flag.exists()
        assert sandbox.boundary_problem() is not None
    finally:
        sandbox._probe.cache_clear()


def test_harness_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_TEST_SECRET", "s3cret")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    result = run_untrusted("import json, os\nprint(json.dumps(dict(os.environ)))")
    assert result.passed
    assert "s3cret" not in result.stdout and "https_proxy" not in result.stdout and "PYTHONPATH" not in result.stdout
    assert '"HOME": "' in result.stdout


@pytest.mark.parametrize(
    ("escape", "refusal"),
    [
        ("import subprocess\nsubprocess.run(['true'])", "OSError: subprocess.Popen is disabled in the sandbox"),
        ("import os\nos.kill(os.getppid(), 0)", "OSError: os.kill of another process is disabled in the sandbox"),
        ("import os\nos.system('true')", "OSError: os.system is disabled in the sandbox"),
        ("import shutil\nshutil.rmtree('.')", "OSError: shutil.rmtree is disabled in the sandbox"),
        ("import ctypes", "ModuleNotFoundError: import of ctypes halted; None in sys.modules"),
    ],
    ids=["subprocess", "kill", "system", "rmtree", "ctypes"],
)
def test_guard_refuses_the_usual_escapes(escape: str, refusal: str) -> None:
    result = run_untrusted(escape)
    assert result.status == "failed" and result.detail == refusal


def test_stdin_is_empty() -> None:
    assert run_untrusted("import sys\nassert sys.stdin.read() == ''").passed


def test_output_is_bounded() -> None:
    result = run_untrusted("import sys\nwhile True:\n    sys.stdout.write('x' * 2**20)")
    assert result.status == "failed" and "File too large" in result.detail
    assert len(result.stdout) <= 4096


def test_large_program_runs_from_a_file() -> None:
    program = "# " + "padding " * 30_000 + "\nassert __name__ == '__main__'\n"
    assert len(program) > 200_000
    assert run_untrusted(program).passed


def test_runs_from_threads_at_once() -> None:
    programs = ["assert True", "assert False", "assert True", "assert False"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = list(pool.map(lambda p: run_untrusted(p).status, programs))
    assert statuses == ["passed", "failed", "passed", "failed"]


def test_the_cgroup_cannot_be_left() -> None:
    """A program moving itself to another cgroup (the root one) escapes its pids limit and the
    cleanup that finds it there: the cgroup file system is not even visible, let alone writable."""
    program = """
import os, sys
moved = []
for root in ('/sys/fs/cgroup', '/sys/fs/cgroup/unified'):
    try:
        with open(root + '/cgroup.procs', 'w') as procs:
            procs.write(str(os.getpid()))
        moved.append(root)
    except OSError as exc:
        print(root, type(exc).__name__)
print('own cgroup:', open('/proc/self/cgroup').read().strip())
sys.exit(1 if moved else 0)
"""
    result = run_untrusted(program)
    assert result.passed, result.detail
    assert "/sys/fs/cgroup FileNotFoundError" in result.stdout or "/sys/fs/cgroup PermissionError" in result.stdout
