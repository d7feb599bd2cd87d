"""The embedded compute backend: each training job is a local subprocess with rlimits and a timeout.

It implements :class:`~evolution.training.compute.ComputeBackend` by running ``python -m
evolution.training.job_runner <job.json>`` in the job's output directory, or, for a job whose trainer is a
command following the training contract, that command in the job directory (the output directory's parent) with
``{input}`` and ``{output}`` substituted in its arguments. The job runs in its own process group (session), so a
timeout or a cancellation kills everything the job started, not only the direct child. The child gets a scrubbed
environment: training needs no credentials, so none are passed on, and BLAS/OpenMP are capped at one thread for
reproducible bytes. A command trainer gets even less: no PYTHONPATH, a HOME and TMPDIR of its own in the job
directory, and the contract's variables; it is started through :mod:`evolution.training.parent_watch` (run as a
script: standard library only) so that it too dies with the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from evolution.errors import InvalidInput, TrainingFailed
from evolution.training import parent_watch
from evolution.training.compute import (
    RUNNER_MODULE,
    THREAD_CAPS,
    TRAINER_LOG_FILE,
    ContractRun,
    Heartbeat,
    TrainingJob,
    TrainingJobResult,
    contract_result,
    verified_result,
    write_job_file,
)
from evolution.training.contract import CONTRACT_ENV, INPUT_DIR_ENV, OUTPUT_DIR_ENV, SEED_ENV
from evolution.training.parent_watch import PARENT_PID_ENV

LOG_FILE = "job.log"
SCRATCH_DIR = "scratch"  # the command trainer's HOME and TMPDIR, inside the job directory
_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "VIRTUAL_ENV")
_TRAINER_PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
# What a process out of memory under RLIMIT_AS tends to print last (Python, C++, C).
_OUT_OF_MEMORY_SIGNS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")
_MAX_LOG_FILE_BYTES = 10 * 1024 * 1024


class LocalSubprocessBackend:
    """Runs ``python -m evolution.training.job_runner <job.json>`` as a child with rlimits and a timeout."""

    def __init__(
        self,
        python_executable: str = sys.executable,
        *,
        heartbeat_interval_s: float = 2.0,
        log_tail_chars: int = 4000,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.python_executable = python_executable
        self.heartbeat_interval_s = heartbeat_interval_s
        self.log_tail_chars = log_tail_chars
        self.extra_env = dict(extra_env or {})
        self._active: set[str] = set()
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._cancelled: set[str] = set()

    async def run(self, job: TrainingJob, heartbeat: Heartbeat | None = None) -> TrainingJobResult:
        if job.job_id in self._active:
            raise InvalidInput(f"job {job.job_id!r} is already running on this backend")
        self._active.add(job.job_id)  # claimed before the first await, so two callers cannot both pass
        try:
            return await self._run(job, heartbeat)
        finally:
            self._active.discard(job.job_id)
            self._cancelled.discard(job.job_id)

    async def _run(self, job: TrainingJob, heartbeat: Heartbeat | None) -> TrainingJobResult:
        out = Path(job.output_dir).resolve()
        # Absolute paths: the child runs in the output directory (a contract trainer: in the job directory).
        job = job.model_copy(
            update={"dataset_path": str(Path(job.dataset_path).resolve()), "output_dir": str(out)}
        )
        if job.contract is None:
            argv = [self.python_executable, "-m", RUNNER_MODULE, str(write_job_file(job))]
            cwd, env, log_path = out, self._child_env(), out / LOG_FILE
        else:
            run = job.contract.model_copy(update={"input_dir": str(Path(job.contract.input_dir).resolve())})
            job = job.model_copy(update={"contract": run})
            argv, env = self._trainer_call(job, run)
            cwd, log_path = out.parent, out.parent / TRAINER_LOG_FILE

        started = time.monotonic()
        try:
            process = await _spawn_or_kill(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(cwd),
                env=env,
                start_new_session=True,  # own session and process group: killpg reaches all it spawns
                preexec_fn=_rlimit_setter(job.memory_limit_mb, job.cpu_seconds),
            )
        except OSError as exc:
            raise TrainingFailed(f"cannot start the training process {argv[0]!r}: {exc}") from exc
        self._running[job.job_id] = process
        if job.job_id in self._cancelled:  # cancel() came while the process was being started
            _kill_group(process)
        tail = _LogTail(self.log_tail_chars * 4)
        log_file = log_path.open("wb")
        reader = asyncio.create_task(_pump(process, tail, log_file))
        timed_out = False
        try:
            timed_out = await self._wait(job, process, started, heartbeat)
        except BaseException:  # cancelled (or a failing heartbeat): the job must not outlive its caller
            _kill_group(process)
            with contextlib.suppress(BaseException):  # a second cancel must not skip the re-raise below
                await asyncio.shield(process.wait())
            raise
        finally:
            _kill_group(process)  # leftovers of a finished job, if any
            await _finish_reader(reader)
            log_file.close()
            self._running.pop(job.job_id, None)
        cancelled = job.job_id in self._cancelled
        return self._result(job, process.returncode, timed_out, cancelled, time.monotonic() - started, tail)

    async def cancel(self, job_id: str) -> None:
        if job_id not in self._active:
            return
        self._cancelled.add(job_id)  # a job still starting is killed as soon as it is registered
        process = self._running.get(job_id)
        if process is not None:
            _kill_group(process)

    def running_pids(self) -> dict[str, int]:
        """job_id -> pid (which is also the process group id) of the jobs running now."""
        return {job_id: p.pid for job_id, p in self._running.items()}

    async def _wait(
        self,
        job: TrainingJob,
        process: asyncio.subprocess.Process,
        started: float,
        heartbeat: Heartbeat | None,
    ) -> bool:
        """Wait for exit; heartbeat every interval; kill the group and return True on timeout."""
        waiter = asyncio.ensure_future(process.wait())
        try:
            while True:
                remaining = started + job.timeout_s - time.monotonic()
                if remaining <= 0:
                    _kill_group(process)
                    await waiter
                    return True
                done, _ = await asyncio.wait({waiter}, timeout=min(self.heartbeat_interval_s, remaining))
                if done:
                    return False
                if heartbeat is not None:
                    heartbeat(f"training job {job.job_id} running for {time.monotonic() - started:.1f} s")
        finally:
            if not waiter.done():
                waiter.cancel()

    def _trainer_call(self, job: TrainingJob, run: ContractRun) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of a command trainer: a clean output directory, the contract's variables."""
        if run.trainer.kind != "command":
            raise TrainingFailed(
                f"the local compute backend runs command trainers; a {run.trainer.kind} trainer "
                f"({getattr(run.trainer, 'image', '?')}) needs the kubernetes backend"
            )
        out, job_dir = Path(job.output_dir), Path(job.output_dir).parent
        shutil.rmtree(out, ignore_errors=True)  # never judge a previous attempt's files
        out.mkdir(parents=True)
        scratch = job_dir / SCRATCH_DIR
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        env = {k: os.environ[k] for k in _TRAINER_PASSTHROUGH_ENV if k in os.environ}
        env.update(THREAD_CAPS)
        env.update(
            {
                INPUT_DIR_ENV: run.input_dir,
                OUTPUT_DIR_ENV: str(out),
                CONTRACT_ENV: run.contract,
                SEED_ENV: str(job.seed),
                "HOME": str(scratch),  # not the worker's: no ~/.aws, ~/.netrc or the like to read
                "TMPDIR": str(scratch),
                "PYTHONHASHSEED": "0",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                PARENT_PID_ENV: str(os.getpid()),
            }
        )
        argv = [a.replace("{input}", run.input_dir).replace("{output}", str(out)) for a in run.trainer.argv]
        program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if program is None:
            raise TrainingFailed(f"the trainer's command {argv[0]!r} is not on the worker's PATH")
        # parent_watch.py as a script (standard library only; -I: nothing of ours, not even its directory, on the
        # path) asks the kernel to kill the trainer with the worker, then execs it: the pid and process group we
        # hold become the trainer's.
        return [self.python_executable, "-I", parent_watch.__file__, program, *argv[1:]], env

    def _child_env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
        env.update(THREAD_CAPS)
        env[PARENT_PID_ENV] = str(os.getpid())  # the job dies with this process (parent_watch.py)
        env["PYTHONHASHSEED"] = "0"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        source_root = str(Path(__file__).resolve().parents[2])  # so `-m evolution...` resolves this checkout
        inherited = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = source_root if not inherited else f"{source_root}{os.pathsep}{inherited}"
        env.update(self.extra_env)
        return env

    def _result(
        self,
        job: TrainingJob,
        returncode: int | None,
        timed_out: bool,
        cancelled: bool,
        duration_s: float,
        tail: _LogTail,
    ) -> TrainingJobResult:
        log_tail = tail.text(self.log_tail_chars)
        base: dict[str, Any] = {
            "job_id": job.job_id,
            "duration_s": duration_s,
            "log_tail": log_tail,
            "exit_code": returncode,
        }
        if timed_out:
            error = f"timed out after {job.timeout_s:g} s; the job's process group was killed"
            return TrainingJobResult(status="timed_out", error=error, **base)
        if cancelled:
            return TrainingJobResult(status="failed", error="cancelled", **base)
        exit_failure = None if returncode == 0 else _describe_exit(returncode, job, log_tail)
        if job.contract is not None:
            return contract_result(
                job, exit_code=returncode, exit_failure=exit_failure, duration_s=duration_s, log_tail=log_tail
            )
        return verified_result(
            job, exit_code=returncode, exit_failure=exit_failure, duration_s=duration_s, log_tail=log_tail
        )


class _LogTail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) > 2 * self.limit:
            del self._buffer[: len(self._buffer) - self.limit]

    def text(self, chars: int) -> str:
        return bytes(self._buffer[-self.limit :]).decode("utf-8", errors="replace")[-chars:]


async def _pump(process: asyncio.subprocess.Process, tail: _LogTail, log_file: IO[bytes]) -> None:
    """Drain the child's output (a full pipe would block it) into the tail and the job's log file."""
    assert process.stdout is not None
    written = 0
    while chunk := await process.stdout.read(65536):
        tail.feed(chunk)
        if written < _MAX_LOG_FILE_BYTES:
            log_file.write(chunk[: _MAX_LOG_FILE_BYTES - written])
            written += len(chunk)


async def _finish_reader(reader: asyncio.Task[None]) -> None:
    """Let the reader drain what is left; give up soon if a process outside the group holds the pipe."""
    try:
        await asyncio.wait_for(asyncio.shield(reader), timeout=2.0)
    except TimeoutError:
        reader.cancel()
    except asyncio.CancelledError:
        reader.cancel()
        raise


def _rlimit_setter(memory_limit_mb: int | None, cpu_seconds: int | None) -> Callable[[], None]:
    """A preexec function that only calls setrlimit (values computed before the fork, nothing else runs).

    preexec_fn is documented as unsafe with threads because arbitrary code could take a lock that another
    thread held at fork time; setrlimit takes none, which is why this function does nothing else.
    """
    limits: list[tuple[int, tuple[int, int]]] = [(resource.RLIMIT_CORE, (0, 0))]
    if memory_limit_mb is not None:
        size = memory_limit_mb * 1024 * 1024
        limits.append((resource.RLIMIT_AS, (size, size)))
    if cpu_seconds is not None:
        # Soft limit sends SIGXCPU (terminates); the hard limit a second later is SIGKILL for a process that
        # ignores it.
        limits.append((resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1)))

    def apply() -> None:
        for which, value in limits:
            resource.setrlimit(which, value)

    return apply


async def _spawn_or_kill(program: str, *args: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """create_subprocess_exec, except that a caller cancelled while it runs does not leak the started child.

    The child is running (it may have done work) before the coroutine returns its process: a cancellation then
    would lose the only handle to kill it by.
    """
    spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(program, *args, **kwargs))
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            process = await spawning
            _kill_group(process)
            await process.wait()
        raise


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _describe_exit(returncode: int | None, job: TrainingJob, log_tail: str = "") -> str:
    if returncode is None:
        return "the job did not exit"
    if returncode >= 0:
        if job.memory_limit_mb is not None and any(sign in log_tail for sign in _OUT_OF_MEMORY_SIGNS):
            return (
                f"the job exited with code {returncode} after running out of its memory limit of "
                f"{job.memory_limit_mb} MB"
            )
        return f"the job exited with code {returncode}"
    signum = -returncode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGXCPU:
        return f"the job was killed by {name}: its CPU limit of {job.cpu_seconds} s was exceeded"
    if signum == signal.SIGKILL:
        return f"the job was killed by {name} (the CPU hard limit or the kernel's out-of-memory killer)"
    return f"the job was killed by {name}"
