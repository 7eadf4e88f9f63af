"""Settings for `rrq-runner --settings rrq_app.runner.settings`.

The same job functions as the Rust router in `taskwire_seed_systems::rrq::jobs_router`, so
every scenario runs the same whether RRQ's Python runner or a taskwire runner executes it.
Each execution (but of `noop`, the benchmark's job) and each cancellation a handler sees
is counted in Redis (the URL comes from
TASKWIRE_RRQ_COUNTS_REDIS), so tests can tell how often a job really ran.
"""
import asyncio
import os

import redis.asyncio as aioredis
from rrq import PythonRunnerSettings, Registry
from rrq.exc import RetryJob
from rrq.runner import ExecutionRequest

registry = Registry()
_counts = aioredis.from_url(os.environ["TASKWIRE_RRQ_COUNTS_REDIS"])


async def _count(kind: str, job_id: str) -> None:
    await _counts.incr(f"taskwire:{kind}:{job_id}")


async def echo(request: ExecutionRequest):
    await _count("executions", request.job_id)
    return {"echo": request.params, "attempt": request.context.attempt}


async def noop(request: ExecutionRequest):
    """Does nothing, not even count: the benchmark's job."""
    return None


async def flaky(request: ExecutionRequest):
    """Asks for a retry on its first attempt, then succeeds."""
    await _count("executions", request.job_id)
    if request.context.attempt < 2:
        raise RetryJob("not yet", defer_seconds=float(request.params.get("retry_after", 0.2)))
    return {"ok": True, "attempt": request.context.attempt}


async def boom(request: ExecutionRequest):
    await _count("executions", request.job_id)
    raise RuntimeError(request.params.get("message", "kaboom"))


async def slow(request: ExecutionRequest):
    """Sleeps `seconds`, counting a cancellation if one stops it."""
    await _count("executions", request.job_id)
    try:
        await asyncio.sleep(float(request.params.get("seconds", 1)))
    except asyncio.CancelledError:
        await asyncio.shield(_count("cancelled", request.job_id))
        raise
    return {"slept": request.params.get("seconds", 1), "attempt": request.context.attempt}


for name, function in [("echo", echo), ("noop", noop), ("flaky", flaky), ("boom", boom), ("slow", slow)]:
    registry.register(name, function)

settings = PythonRunnerSettings(registry=registry)
