"""Drives a real RRQ deployment for taskwire's tests, through RRQ's own client.

usage: python rrq_driver.py RRQ_TOML REDIS_URL

Reads one JSON command per line on stdin and answers each with one JSON line on stdout:
  {"op": "enqueue", "function": F, "params": {...}, "options": {...}}  -> {"job_id": ID}
  {"op": "wait", "job_ids": [...], "timeout": SECONDS}                -> {"jobs": [STATE, ...]}
  {"op": "counts", "job_ids": [...]}                                  -> {"executions": {...}, "cancelled": {...}}
  {"op": "quit"}                                                       -> {}
A STATE is what RRQClient.get_job_status reports (status, result, last_error), the job
hash's current_retries, start_time and completion_time, and whether the job is in the dead-letter
queue; status is null if the job did not end within the timeout. Errors are answered
{"error": MESSAGE}.
"""
import asyncio
import json
import sys
import time

import redis.asyncio as aioredis
from rrq import RRQClient

TERMINAL = {"COMPLETED", "FAILED"}


async def job_state(client, redis, job_id, result):
    fields = await redis.hgetall(f"rrq:job:{job_id}")
    fields = {k.decode(): v.decode() for k, v in fields.items()}
    dlq = [j.decode() for j in await redis.lrange("rrq:dlq:default", 0, -1)]
    return {
        "job_id": job_id,
        "status": None if result is None else result.status.value,
        "result": None if result is None else result.result,
        "last_error": None if result is None else result.last_error,
        "current_retries": int(fields.get("current_retries", "0")),
        "start_time": fields.get("start_time"),
        "completion_time": fields.get("completion_time"),
        "in_dlq": job_id in dlq,
    }


async def wait(client, redis, job_ids, timeout):
    # One client cannot run several wait_for_completion calls at once, so poll the status.
    deadline = time.monotonic() + timeout
    done = {}
    while len(done) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id not in done:
                status = await client.get_job_status(job_id)
                if status is not None and status.status.value in TERMINAL:
                    done[job_id] = status
        await asyncio.sleep(0.02)
    return [await job_state(client, redis, j, done.get(j)) for j in job_ids]


async def counts(redis, job_ids):
    async def read(kind):
        values = await redis.mget([f"taskwire:{kind}:{j}" for j in job_ids]) if job_ids else []
        return {j: int(v or 0) for j, v in zip(job_ids, values)}
    return {"executions": await read("executions"), "cancelled": await read("cancelled")}


async def main():
    config, redis_url = sys.argv[1], sys.argv[2]
    client = RRQClient(config_path=config)
    redis = aioredis.from_url(redis_url)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        try:
            op = command["op"]
            if op == "enqueue":
                options = dict(command.get("options", {}))
                options["params"] = command.get("params", {})
                answer = {"job_id": await client.enqueue(command["function"], options)}
            elif op == "wait":
                answer = {"jobs": await wait(client, redis, command["job_ids"], command["timeout"])}
            elif op == "counts":
                answer = await counts(redis, command["job_ids"])
            elif op == "quit":
                print("{}", flush=True)
                break
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as error:  # the test reads the message
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)
    await client.close()


asyncio.run(main())
