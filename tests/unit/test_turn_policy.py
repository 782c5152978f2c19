"""The viva turn policy: how long a pause must last, from what is known at it."""

from __future__ import annotations

import pytest

from core.config import TurnConfig
from worker.voice.policy import (
    FixedSilence,
    PauseSignals,
    PolicySettings,
    SmartTurnOnly,
    VivaPolicy,
    policy_for,
    trails_off,
)

S = PolicySettings()
POLICY = VivaPolicy(S)
LONG = " ".join(["the heart pumps blood through the body"] * 6) + "."


def wait(eot: float | None, text: str | None, coverage: float | None = None) -> int:
    return POLICY.wait_ms(PauseSignals(200, 3000, eot, text, coverage))


def wait_before_words(
    eot: float, prior: str | None, coverage: float | None, policy: VivaPolicy = POLICY
) -> int:
    """The policy at a pause whose last words are still being transcribed."""
    return policy.wait_ms(PauseSignals(200, 6000, eot, None, None, prior, coverage))


def test_nothing_ends_before_the_model_and_the_transcript_have_answered() -> None:
    assert wait(None, "Every contract needs an offer.", 1.0) == S.max_ms
    assert wait(0.99, None) == S.max_ms
    assert wait(0.99, "") == S.max_ms


def test_a_complete_answer_that_covers_the_question_is_answered_quickly() -> None:
    text = "Every contract needs an offer, acceptance and consideration."
    assert wait(0.95, text, 1.0) == S.fast_ms
    assert wait(0.95, LONG, None) == S.fast_ms  # long: an answer whatever its keywords


@pytest.mark.parametrize(
    "text",
    [
        "Insulin is made by the beta cells and",
        "The first step is to, um",
        "It works because",
        "You must show a duty of care, a breach of",
        "So the load goes to the,",
    ],
)
def test_a_thought_left_hanging_is_waited_for(text: str) -> None:
    assert trails_off(text)
    assert wait(0.95, text, 0.9) == S.thinking_ms


def test_the_model_hearing_an_unfinished_turn_is_waited_for() -> None:
    assert wait(0.05, "Every contract needs an offer.", 1.0) == S.thinking_ms


def test_a_complete_first_sentence_short_for_the_question_is_given_time() -> None:
    """The issue's case: a finished sentence that is not yet a finished answer."""
    first = "Insulin is made by the beta cells of the pancreas."
    assert not trails_off(first)
    assert wait(0.98, first, 0.25) == S.short_answer_ms
    assert S.short_answer_ms >= 1500  # a 900 ms thinking pause is waited out with room


def test_a_sure_model_ends_a_short_answer_when_the_sure_path_is_on() -> None:
    first = "Insulin is made by the beta cells of the pancreas."
    sure = VivaPolicy(PolicySettings(sure_ms=400, eot_sure=0.9, sure_words=6))
    assert sure.wait_ms(PauseSignals(200, 3000, 0.95, first, 0.25)) == 400
    # Not sure enough, too few words, or trailing off: the usual waits.
    assert sure.wait_ms(PauseSignals(200, 3000, 0.8, first, 0.25)) == S.short_answer_ms
    assert sure.wait_ms(PauseSignals(200, 3000, 0.95, "Beta cells.", 0.25)) == S.short_answer_ms
    assert sure.wait_ms(PauseSignals(200, 3000, 0.95, first[:-1] + " and", 0.25)) == S.thinking_ms
    assert wait(0.95, first, 0.25) == S.short_answer_ms  # off by default


def test_in_between_signals_get_a_middling_wait() -> None:
    text = "Every contract needs an offer, acceptance and consideration."
    assert wait(0.5, text, 1.0) == S.unsure_ms
    fourteen = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen."
    # A sure model after min_words words short of the keywords: the student may be building up
    # to them, so longer than a whole answer the model is unsure of, shorter than a short one.
    assert wait(0.95, fourteen, 0.2) == S.sounds_done_ms
    assert S.unsure_ms < S.sounds_done_ms < S.short_answer_ms
    assert wait(0.95, "one two three four five six.", 0.2) == S.short_answer_ms


def test_a_whole_answer_is_answered_quickly_even_when_the_model_is_unsure() -> None:
    """The model says much the same after a complete sentence inside an answer as at its end,
    and below 0.5 at many true ends: when the words make a whole answer, a middling model does
    not hold the reply for more than a beat."""
    text = "Every contract needs an offer, acceptance and consideration."
    assert wait(0.3, text, 1.0) == S.unsure_ms <= 400
    assert wait(0.3, text, 0.2) == S.short_answer_ms  # the same sentence, short for the question
    assert wait(S.eot_low / 2, text, 1.0) == S.thinking_ms  # unless the model hears it unfinished


def test_baselines() -> None:
    assert FixedSilence(300).wait_ms(PauseSignals(0, 0)) == 300
    assert SmartTurnOnly().wait_ms(PauseSignals(200, 900, 0.9)) == 0
    assert SmartTurnOnly().wait_ms(PauseSignals(200, 900, 0.3)) == 3000
    assert SmartTurnOnly().wait_ms(PauseSignals(200, 900)) == 3000


def test_config_picks_the_policy_and_checks_the_waits() -> None:
    assert isinstance(policy_for(TurnConfig(policy="silence", end_silence_ms=640)), FixedSilence)
    viva = policy_for(TurnConfig(fast_ms=150))
    assert isinstance(viva, VivaPolicy) and viva.settings.fast_ms == 150
    with pytest.raises(ValueError, match="must grow"):
        TurnConfig(fast_ms=2000, unsure_ms=900)
    with pytest.raises(ValueError, match="eot_low"):
        TurnConfig(eot_low=0.9, eot_high=0.5)


def test_before_the_last_words_are_transcribed_only_a_sure_model_and_a_whole_answer_end_it() -> (
    None
):
    whole = "Every contract needs an offer, acceptance and consideration."
    sure = VivaPolicy(PolicySettings(eot_sure=0.9))

    def early(eot: float, prior: str | None, coverage: float | None) -> int:
        return wait_before_words(eot, prior, coverage, sure)

    # Off by default: the last words decide (they may be "and").
    assert wait_before_words(0.99, whole, 1.0) == S.max_ms
    assert early(0.95, whole, 1.0) == S.fast_ms  # what came before already answers it
    assert early(0.95, LONG, None) == S.fast_ms
    assert early(0.8, whole, 1.0) == S.max_ms  # not sure enough: wait for the words
    assert early(0.95, "Insulin is made by the beta cells.", 0.2) == S.max_ms
    assert early(0.95, None, None) == S.max_ms  # nothing transcribed yet
    assert early(0.05, whole, 1.0) == S.thinking_ms  # the model hears an unfinished turn
