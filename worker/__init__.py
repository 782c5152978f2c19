"""The realtime core: config, grading, server, protocol, sessions, turn-taking, exam flow."""
