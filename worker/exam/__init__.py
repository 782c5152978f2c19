"""The exam: the viva flow as a pure state machine, the evaluators, and what a student means."""
