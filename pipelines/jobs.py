"""Background batch jobs for `matteflow serve`: a queue that runs one `matteflow run` at a time
(each in its own process, so a failing job never takes the server down), keeps each job's
status, counts and run.json, and calls its callback URL when it ends."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from matteflow.pipelines.webhooks import deliver
from matteflow.transforms.failures import MatteflowError
from matteflow.transforms.storage import read_bytes

__all__ = ["Job", "JobQueue", "JobRequest"]

_LOG = logging.getLogger(__name__)
_ERROR_TAIL = 2000  # characters of a failed job's stderr kept as its error


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobRequest:
    """What a client asks to run."""

    manifest: str
    output: str
    profile: str | None = None
    callback_url: str | None = None


@dataclass
class Job:
    """One job and where it stands: queued | running | finished | failed."""

    id: str
    request: JobRequest
    status: str = "queued"
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    error: str | None = None
    run: dict[str, Any] | None = None  # the run's run.json
    callback_delivered: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The job as the API shows it (and as its callback receives it)."""
        return {
            "id": self.id,
            "status": self.status,
            **asdict(self.request),
            "counts": (self.run or {}).get("counts"),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "error": self.error,
            "run": self.run,
        }


class JobQueue:
    """Runs submitted jobs one at a time, in order, on a worker thread.

    `secret` signs callbacks (None: callbacks are refused at submission by the caller);
    `command` is the command line that starts `matteflow run`.
    """

    def __init__(
        self,
        secret: str | None,
        *,
        model: str | None = None,
        profile: str | None = None,
        command: tuple[str, ...] = (sys.executable, "-m", "matteflow", "run"),
    ) -> None:
        self._secret = secret
        self._command = (*command, *(("--model", model) if model else ()))
        self._profile = profile  # a job's default profile: the server's
        self._process: subprocess.Popen[str] | None = None
        self._closed = False
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="matteflow-jobs", daemon=True)
        self._worker.start()

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._worker.is_alive()

    def submit(self, request: JobRequest) -> Job:
        """Queue a job; returns it (status queued)."""
        job = Job(id=uuid.uuid4().hex, request=request)
        with self._lock:
            self._jobs[job.id] = job
        self._queue.put(job)
        return job

    def close(self) -> None:
        """Stop the running job (SIGTERM: it stops cleanly, a rerun completes it)."""
        self._closed = True
        process = self._process
        if process is not None:
            process.terminate()

    def get(self, job_id: str) -> Job | None:
        """The job with this id, if this server has it."""
        with self._lock:
            return self._jobs.get(job_id)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._run(job)
            except Exception as err:  # the worker keeps going whatever one job does
                job.status, job.error = "failed", f"{type(err).__name__}: {err}"
                _LOG.exception("job %s", job.id)
            job.finished_at = _now()
            if job.request.callback_url and self._secret:
                body = json.dumps(job.to_json()).encode()
                job.callback_delivered = deliver(job.request.callback_url, body, self._secret)

    def _run(self, job: Job) -> None:
        r = job.request
        argv = [*self._command, "--manifest", r.manifest, "--output", r.output]
        profile = r.profile or self._profile
        argv += ["--profile", profile] if profile else []
        job.status, job.started_at = "running", _now()
        with subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,  # progress lines; the outcome is in run.json
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        ) as process:
            self._process = process
            if self._closed:
                process.terminate()
            _, stderr = process.communicate()
        self._process = None
        job.exit_code = process.returncode
        try:
            job.run = json.loads(read_bytes(f"{r.output.rstrip('/')}/run.json"))
        except (MatteflowError, ValueError):
            job.run = None
        # 0: finished; 3: finished, with more failed rows than the profile allows.
        if process.returncode in (0, 3) and job.run is not None:
            job.status = "finished"
        else:
            job.status = "failed"
            job.error = stderr.strip()[-_ERROR_TAIL:] or f"exit code {process.returncode}"
