"""The bottom layer: configuration, the shared vocabulary, grading and typed errors.

Nothing here imports another package of this project (only the standard library and third-party
packages), so `db/`, `models/` and `worker/` can all build on it; see docs/architecture.md.
"""
