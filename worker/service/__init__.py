"""The worker as a service: one context (config with live settings applied, database, models,
live sessions, prompts), admission and opening sessions, student tokens, health, and the
process-lifetime resources. Used by both front doors, `worker.http` and `worker.runpod`."""
