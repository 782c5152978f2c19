"""The short Whisper window's arithmetic and its test for a decode to redo whole."""

from __future__ import annotations

from models.whisper import BATCH_FRAMES, degenerate, window_frames


def test_window_is_the_audio_plus_the_pad_in_whole_seconds() -> None:
    assert window_frames(1.6, 3) == 500  # 4.6 s -> 5 s
    assert window_frames(5.0, 3) == 800
    assert window_frames(0.1, 1) == 200


def test_window_never_exceeds_whisper_s_and_pad_zero_is_the_whole_window() -> None:
    assert window_frames(29.5, 3) == BATCH_FRAMES
    assert window_frames(2.0, 0) == BATCH_FRAMES
    assert window_frames(2.0, 40) == BATCH_FRAMES


def test_an_ordinary_answer_is_kept() -> None:
    text = "Every contract needs an offer, acceptance and consideration."
    assert not degenerate(text, -0.2, 12, 60)
    assert not degenerate("", -3.0, 0, 60)  # nothing said: nothing to redo


def test_a_loop_a_cut_decode_or_an_unsure_one_is_redone() -> None:
    assert degenerate("the cells, " * 20, -0.1, 58, 200)  # compresses far too well
    assert degenerate("a wing stalls when", -0.1, 60, 60)  # ran to its token limit
    assert degenerate("tree I just", -1.4, 4, 60)  # faster-whisper would retry it
