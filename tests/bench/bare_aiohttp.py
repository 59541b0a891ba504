"""Baseline (a): the bare aiohttp script an SRE would write — gather + semaphore, no signing,
no retries, no journal, no report. Usage: bare_aiohttp.py URL PROJECT IDS_FILE IN_FLIGHT"""

import asyncio
import sys

import aiohttp


async def main(ids: list[str]) -> None:
    url, project, in_flight = sys.argv[1], sys.argv[2], int(sys.argv[4])
    sem = asyncio.Semaphore(in_flight)
    ok = 0

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:

        async def delete(task_id: str) -> None:
            nonlocal ok
            async with sem, session.delete(f"{url}/v2/{project}/tasks/{task_id}") as resp:
                await resp.read()
                ok += resp.status < 300

        await asyncio.gather(*(delete(t) for t in ids))
    print(ok)


with open(sys.argv[3]) as f:
    task_ids = [line.strip() for line in f if line.strip()]
asyncio.run(main(task_ids))
