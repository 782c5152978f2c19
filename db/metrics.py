"""Prometheus metrics of the write-behind writer (process-wide, labelled by nothing)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

QUEUE_DEPTH = Gauge("viva_writer_queue_depth", "Ops accepted or waiting, not yet committed")
JOURNAL_BYTES = Gauge("viva_writer_journal_bytes", "Bytes held in the writer's journal on disk")
BATCH_SIZE = Histogram(
    "viva_writer_batch_ops",
    "Ops per committed batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
FLUSH_SECONDS = Histogram(
    "viva_writer_flush_seconds",
    "Time to commit one batch, retries excluded",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROWS_WRITTEN = Counter("viva_writer_rows_written_total", "Ops committed to the database")
RETRIES = Counter("viva_writer_retries_total", "Batch commits retried after a transient error")
REJECTED = Counter("viva_writer_rejected_total", "Ops dead-lettered after a permanent error")
JOURNAL_FSYNC_SECONDS = Histogram(
    "viva_writer_journal_fsync_seconds",
    "Time to append and fsync one group of ops to the journal",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
