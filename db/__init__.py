"""Persistence: tables, engine, queries, the write-behind writer and migrations."""
