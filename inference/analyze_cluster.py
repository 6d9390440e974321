"""``rigstream analyze`` on a Dask cluster: one task per session chunk.

``workers=N`` starts a local cluster of N worker processes (one thread each, so N engines run
side by side); ``scheduler=ADDRESS`` uses a running one (a SLURM cluster made with
dask-jobqueue, say: see the README). Each session's plan is sent to the workers once
(``scatter``, broadcast), each chunk is a task running :func:`~rigstream.inference.analyze.pose_chunk`
— the same function a serial run calls, so the tables are the same bytes — and the client
saves every chunk as it comes back, so a cluster run that dies resumes like a serial one.
A session's outputs are written by the client as soon as its last chunk is in.

Workers read the session's videos, so on a cluster of several machines the session folders
must be on a file system every worker sees, under the same paths.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from rigstream.inference.analyze import (
    AnalyzeError,
    Progress,
    SessionPlan,
    pose_chunk,
    save_chunk,
    start_session,
)

logger = logging.getLogger(__name__)


def require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise AnalyzeError('analyze --workers/--scheduler needs Dask distributed '
                           '(pip install "dask[distributed]")') from None
    return distributed


def analyze_on_cluster(plans: Sequence[SessionPlan], *, workers: int | None = None,
                       scheduler: str | None = None, restart: bool = False,
                       progress: Progress | None = None) -> list[dict[str, Any]]:
    """Analyse sessions with their chunks as tasks on a Dask cluster; the sessions' reports,
    in the order given."""
    from rigstream.inference.analyze_output import finish_session

    distributed = require_distributed()
    if scheduler is None and (workers is None or workers < 1):
        raise AnalyzeError(f"analyze: --workers must be at least 1, got {workers}")
    cluster = None
    if scheduler is None:
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except OSError as exc:
            raise AnalyzeError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    reports: list[dict[str, Any] | None] = [None] * len(plans)
    try:
        run = uuid.uuid4().hex[:8]
        owner: dict[str, tuple[int, int]] = {}
        left: dict[int, int] = {}
        done: dict[int, int] = {}
        started: dict[int, float] = {}
        posing: dict[int, int] = {}
        futures = []
        for p, plan in enumerate(plans):
            start = start_session(plan, restart, progress)
            if start.skipped is not None:
                reports[p] = start.skipped
                continue
            todo, done[p] = start.todo, start.done
            if not todo:
                reports[p] = finish_session(plan, resumed_chunks=plan.chunks)
                continue
            remote = client.scatter(plan, broadcast=True, hash=False)
            started[p] = time.perf_counter()
            left[p] = len(todo)
            posing[p] = sum(plan.chunk_len(i) for i in todo)
            for i in todo:
                fut = client.submit(pose_chunk, remote, i, pure=False, key=f"rigstream-analyze-{run}-{p}-{i}")
                owner[fut.key] = (p, i)
                futures.append(fut)
        resumed = {p: plans[p].chunks - left[p] for p in left}
        for fut in distributed.as_completed(futures):
            p, i = owner[fut.key]
            plan = plans[p]
            save_chunk(plan, fut.result())  # a task's exception is raised here
            done[p] += plan.chunk_len(i)
            left[p] -= 1
            if progress:
                progress(plan.name, done[p], len(plan.trigger_index))
            if left[p] == 0:
                reports[p] = finish_session(plan, posed_s=time.perf_counter() - started[p],
                                            posed_sets=posing[p], resumed_chunks=resumed[p])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return [r for r in reports if r is not None]
