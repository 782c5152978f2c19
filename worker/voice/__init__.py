"""The voice loop of one connection: turn detection and policy, the listener, replies and their
paced audio, the speaker, and per-turn metrics."""
