"""The realtime worker, in layers. Each subpackage may import the ones before it in this order,
and never one after it:

    protocol < exam < voice < session < service < http < runpod

- protocol: the voice WebSocket's wire events, their parsing, and the refusal (error + close).
- exam: the exam flow (questions, follow-ups, time limits) and the evaluators.
- voice: turn detection, the outbox, the speaker (TTS, prompt cache), per-turn metrics, and the
  connection that turns PCM into heard answers and replies.
- session: the viva session that outlives connections, scoring, usage.
- service: the one worker context (config with live settings, database, models, live sessions),
  opening sessions, tokens, health, process resources.
- http: the aiohttp application, routes, the stream route, monitor, pages and `serve()`.
- runpod: the serverless handler, its runtime thread, job inputs, audio decoding, job actions.

Below all of them: `core` (config, vocabulary, grading, errors), then `models` and `db`, which
import only `core`. tests/unit/test_layers.py checks this rule and that no import cycle exists.
(Until the issue-14 merge moves them, the exam, voice and session files sit flat in `worker/`;
the test places each in its layer.)
"""
