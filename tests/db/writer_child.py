"""Child process for the SIGKILL test: accept ops, report them, then hang in a slow commit.

argv: DB_URL JOURNAL_DIR VIVA_JSON N. The first half of the ops is committed normally; the
second half is accepted (journaled) while every commit is made to take an hour, so the process
is killed with ops accepted but not in the database.
"""

from __future__ import annotations

import asyncio
import json
import sys

from core.config import DatabaseConfig, WriterConfig
from db.engine import create_engine
from db.writer import Writer
from tests.db.helpers import Viva, answer_and_evaluation


async def main(url: str, journal_dir: str, viva_json: str, n: int) -> None:
    viva = Viva(**json.loads(viva_json))
    engine = create_engine(DatabaseConfig(url=url))
    writer = Writer(engine, WriterConfig(journal_dir=journal_dir, batch_interval_ms=10))
    await writer.start()
    ids: dict[str, list[int]] = {"answers": [], "evaluations": []}
    half = n // 2
    for i in range(n):
        if i == half:
            await writer.flush()
            writer.commit_delay_s = 3600.0
        for op in answer_and_evaluation(viva, i):
            ids[op.table].append(op.row["id"])
            seq = writer.enqueue(op)
    await writer.wait_accepted(seq)
    print("ACCEPTED " + json.dumps(ids), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
