"""Admin jobs of the service: bulk index, tune, promote, run as `knnclass` child processes.

A job is the same command a user would type; the child reaches the store through this
service (an embedded store it holds) or the Qdrant server, embeds at a lower CPU priority, and
writes its progress to a file the job status reads. Jobs are recorded in JOBS_DIR/ID.json, so
ones a crash interrupted start again when the service does: `knnclass index` resumes (stored
examples are skipped), tune and promote start over. One job runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExampleNotFoundError, InputError
from ..store._files import atomic_write_text

__all__ = ["KINDS", "Job", "JobRunner", "child_setup"]

KINDS = ("index", "tune", "promote")
_DONE = ("done", "failed", "cancelled")


@dataclass
class Job:
    """One admin job and where it stands."""

    id: str
    kind: str
    collection: str
    args: list[str]
    state: str = "queued"  # queued, running, done, failed, cancelled
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    error: str | None = None
    output: str = ""

    def to_dict(self, progress: dict[str, Any] | None = None) -> dict[str, Any]:
        d = asdict(self)
        d["progress"] = progress
        return d


class JobRunner:
    """Queues jobs, runs them one at a time as child processes, and remembers them on disk."""

    def __init__(self, jobs_dir: Path, store_args: list[str]):
        self.dir = jobs_dir
        self.store_args = store_args  # e.g. ["--store", ROOT]: where the child finds the store
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._queue: asyncio.Queue[str] | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the recorded jobs; queue again those a crash or stop interrupted."""
        self._queue = asyncio.Queue()
        for path in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                job = Job(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            self.jobs[job.id] = job
            if job.state not in _DONE:
                job.state = "queued"
                self._save(job)
                await self._queue.put(job.id)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the running job's child (it is queued again on the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for proc in list(self._procs.values()):
            _terminate(proc)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()

    # --- jobs -----------------------------------------------------------------------------
    async def submit(self, kind: str, collection: str, args: list[str]) -> Job:
        if kind not in KINDS:
            raise InputError(f"unknown job kind {kind!r} (one of {', '.join(KINDS)})")
        assert self._queue is not None, "job runner not started"
        job = Job(f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}", kind, collection, args)
        self.jobs[job.id] = job
        self._save(job)
        await self._queue.put(job.id)
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ExampleNotFoundError(f"no job {job_id!r}")
        return job

    def progress(self, job: Job) -> dict[str, Any] | None:
        try:
            d: dict[str, Any] = json.loads(self._progress_file(job).read_text())
            return d
        except (OSError, ValueError):
            return None

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in _DONE:
            return job
        was_running = job.state == "running"
        job.state, job.finished = "cancelled", time.time()
        self._save(job)
        proc = self._procs.get(job_id)
        if was_running and proc is not None:
            _terminate(proc)
        return job

    def upload_path(self, suffix: str) -> Path:
        (self.dir / "uploads").mkdir(exist_ok=True)
        return self.dir / "uploads" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}{suffix}"

    # --- running ----------------------------------------------------------------------------
    async def _loop(self) -> None:
        assert self._queue is not None
        while True:
            job = self.jobs.get(await self._queue.get())
            if job is None or job.state != "queued":
                continue
            await self._run(job)

    async def _run(self, job: Job) -> None:
        job.state, job.started, job.attempts, job.error = "running", time.time(), job.attempts + 1, None
        self._save(job)
        cmd = [sys.executable, "-m", "knnclass", job.kind, *job.args, *self.store_args, "--collection", job.collection]
        env = {**os.environ, "KNNCLASS_PROGRESS_FILE": str(self._progress_file(job)), "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
            preexec_fn=child_setup,
        )
        self._procs[job.id] = proc
        try:
            out, err = await proc.communicate()
        finally:
            self._procs.pop(job.id, None)
        job.output = (out.decode(errors="replace") + err.decode(errors="replace"))[-4000:]
        if job.state == "cancelled":
            pass
        elif proc.returncode == 0:
            job.state = "done"
        else:
            job.state = "failed"
            lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.startswith("error:")]
            job.error = lines[-1][7:] if lines else f"exited with status {proc.returncode}"
        job.finished = time.time()
        self._save(job)

    def _progress_file(self, job: Job) -> Path:
        return self.dir / f"{job.id}.progress"

    def _save(self, job: Job) -> None:
        atomic_write_text(self.dir / f"{job.id}.json", json.dumps(asdict(job)))


def _terminate(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)


def child_setup() -> None:
    """In a child of the service (a job, an index build): a lower CPU priority than serving, and
    SIGTERM when the service dies (a killed service must not leave a job holding the store it
    restarts on, nor a build of a copy nobody will adopt; Linux only)."""
    with contextlib.suppress(OSError):
        os.nice(10)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
