"""How well the examiner's marks agree with a careful marker, and whether its follow-ups leak.

    python benchmarks/grading.py --profile cpu --json out.json        # keyword, LLM, hybrid
    python benchmarks/grading.py --profile cpu --no-llm --json out.json  # keyword only (fast)

The reference set is benchmarks/data/grading_set.yaml (85 spoken answers to questions of the
six seeded banks: correct, partial, wrong, off-topic, paraphrased, ASR-garbled and "don't know",
each with a reference mark; its header says how the marks were set). Each answer is scored by:
- `keyword`: the keyword matcher with the banks' synonyms (what the worker runs);
- `keyword_no_synonyms`: the same without synonyms (before the synonym work);
- `llm`, `hybrid`: the profile's LLM through `evaluate()` (a rejected LLM mark falls back to
  the keyword mark, as in the worker: `llm_fallbacks` counts those).
Per evaluator: quadratic weighted kappa on 0..10 (marks rounded), Spearman's rho, mean absolute
error, and the feedback-type confusion matrix (reference type from the reference mark).

Follow-ups: for every answer the exam flow would follow up (its keyword estimate is not
`correct`), `followup_leak_rate` is the share whose spoken follow-up names an expected keyword
the student has not said (or a synonym or stem of one): the generic probes, or on LLM profiles
the LLM's follow-up after the check; `followup_llm_raw_leak_rate` is the LLM's text before the
check; `followup_template_leak_rate` is the old template ("Could you say more about
{keyword}?").

`--json PATH` writes, per evaluator, `qwk` and `spearman` (also at the top level under the
evaluator's name), and `followup_leak_rate`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its `models.py` would shadow
# the project's `models` package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from benchmarks.grading_stats import confusion, quadratic_weighted_kappa, spearman  # noqa: E402
from core.config import load_config  # noqa: E402
from core.grading import feedback_type  # noqa: E402
from core.vocabulary import FEEDBACK_TYPES  # noqa: E402
from db.seed import load_banks  # noqa: E402
from models.base import LLM  # noqa: E402
from worker.exam.evaluators import Question, evaluate, keyword_score  # noqa: E402
from worker.exam.flow import Say  # noqa: E402
from worker.exam.probes import leaks, probe  # noqa: E402
from worker.service.records import question_from_seed  # noqa: E402

SET = ROOT / "benchmarks" / "data" / "grading_set.yaml"
MAX = 10


def questions() -> dict[tuple[str, str, int], Question]:
    out = {}
    for i, row in enumerate(load_banks()):
        key = (row["college_type"], row["scenario_id"], int(row["question_number"]))
        out[key] = question_from_seed(row, i + 1, MAX)
    return out


def load_set() -> list[dict[str, Any]]:
    items = yaml.safe_load(SET.read_text())
    bank = questions()
    for item in items:
        key = (item["college_type"], item["scenario_id"], int(item["question_number"]))
        item["question"] = bank[key]
    return items


def agreement(reference: list[float], marks: list[float]) -> dict[str, Any]:
    ref_types = [feedback_type(m, MAX) for m in reference]
    got_types = [feedback_type(m, MAX) for m in marks]
    rho = spearman(reference, marks)
    return {
        "qwk": round(
            quadratic_weighted_kappa(
                [round(m) for m in reference], [round(m) for m in marks], 0, MAX
            ),
            3,
        ),
        "spearman": None if rho is None else round(rho, 3),
        "mae": round(
            sum(abs(a - b) for a, b in zip(reference, marks, strict=True)) / len(marks), 2
        ),
        "feedback_type_accuracy": round(
            sum(a == b for a, b in zip(ref_types, got_types, strict=True)) / len(marks), 3
        ),
        "confusion": confusion(ref_types, got_types, list(FEEDBACK_TYPES)),
    }


def _with_synonyms(q: Question, on: bool) -> Question:
    return (
        q
        if on
        else Question(q.id, q.number, q.text, q.expected_keywords, q.answer_guidelines, q.max_score)
    )


async def score_all(
    items: list[dict[str, Any]], llm: LLM | None, threshold: float
) -> dict[str, Any]:
    marks: dict[str, list[float]] = {"keyword": [], "keyword_no_synonyms": []}
    by_kind: dict[str, dict[str, list[float]]] = {}
    fallbacks = 0
    llm_ms: list[float] = []
    if llm is not None:
        marks |= {"llm": [], "hybrid": []}
    for item in items:
        q, text = item["question"], item["answer"]
        for name, syn in (("keyword", True), ("keyword_no_synonyms", False)):
            ev = await evaluate("keyword_match", _with_synonyms(q, syn), text, threshold=threshold)
            marks[name].append(ev.score_obtained)
        if llm is not None:
            for kind, name in (("llm_based", "llm"), ("hybrid", "hybrid")):
                started = time.perf_counter()
                ev = await evaluate(kind, q, text, llm=llm, threshold=threshold)  # type: ignore[arg-type]
                llm_ms.append((time.perf_counter() - started) * 1000)
                fallbacks += ev.evaluator_type == "keyword_match"
                marks[name].append(ev.score_obtained)
        for name, values in marks.items():
            by_kind.setdefault(item["kind"], {}).setdefault(name, []).append(values[-1])
    reference = [float(i["mark"]) for i in items]
    out: dict[str, Any] = {name: agreement(reference, values) for name, values in marks.items()}
    out["_by_kind"] = {
        kind: {"n": len(v["keyword"]), **{n: round(sum(x) / len(x), 2) for n, x in v.items()}}
        for kind, v in by_kind.items()
    }
    ref_by_kind: dict[str, list[float]] = {}
    for item in items:
        ref_by_kind.setdefault(item["kind"], []).append(float(item["mark"]))
    for kind, v in ref_by_kind.items():
        out["_by_kind"][kind]["reference"] = round(sum(v) / len(v), 2)
    out["_llm_fallbacks"] = fallbacks
    out["_llm_ms_median"] = round(sorted(llm_ms)[len(llm_ms) // 2], 1) if llm_ms else None
    return out


async def followups(
    items: list[dict[str, Any]], llm: LLM | None, threshold: float
) -> dict[str, Any]:
    """The follow-up each partial answer would get, and whether it names what is missing."""
    from models.base import Sampling
    from models.fakes import FakeTTS
    from worker.voice.speaker import PromptCache, Speaker

    speaker = None
    if llm is not None:
        tts = FakeTTS(chars_per_s=1e6)  # only the text matters here
        speaker = Speaker(llm, tts, PromptCache(tts), Sampling(temperature=0.7, max_tokens=32))
    n = template_leaks = spoken_leaks = raw_leaks = 0
    for item in items:
        q, text = item["question"], item["answer"]
        est = keyword_score(text, q.expected_keywords, q.max_score, threshold, q.synonyms)
        if not est.missing or feedback_type(est.score, q.max_score) == "correct":
            continue
        n += 1
        template = f"Could you say more about {est.missing[0]}?"  # before this work
        template_leaks += leaks(template, est.missing, q.synonyms)
        spoken = probe(q, 0, est.missing, q.synonyms)
        if speaker is not None:
            say = Say(spoken, "followup", avoid=est.missing)
            raw = await _llm_followup(speaker, say, q, text)
            raw_leaks += leaks(raw, est.missing, q.synonyms)
            spoken = "".join([t async for t, _ in speaker.probe(say, q, text)]).strip()
        spoken_leaks += leaks(spoken, est.missing, q.synonyms)
    rate = lambda k: round(k / n, 3) if n else 0.0  # noqa: E731
    out = {
        "followups": n,
        "followup_leak_rate": rate(spoken_leaks),
        "followup_template_leak_rate": rate(template_leaks),
    }
    if speaker is not None:
        out["followup_llm_raw_leak_rate"] = rate(raw_leaks)
    return out


async def _llm_followup(speaker: Any, say: Say, q: Question, said: str) -> str:
    """What the LLM writes, before the check (the prompt `Speaker.probe` sends)."""
    from worker.voice.speaker import probe_messages

    messages = probe_messages(say.kind, q, said)
    return "".join([d async for d in speaker.llm.stream(messages, speaker.probe_sampling)])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(ROOT / "config.yaml", {"VIVA_PROFILE": args.profile})
    items = load_set()
    hub = None
    llm = None
    if not args.no_llm:
        from models.hub import load_hub

        hub = await load_hub(cfg.models)
        llm = hub.llm
    try:
        threshold = cfg.exam.keyword_matching_threshold
        scores = await score_all(items, llm, threshold)
        leak = await followups(items, llm, threshold)
    finally:
        if hub is not None:
            await hub.close()
    evaluators = {k: v for k, v in scores.items() if not k.startswith("_")}
    return {
        "profile": args.profile,
        "llm": None if llm is None else llm.info.name,
        "answers": len(items),
        "kinds": dict(Counter(i["kind"] for i in items)),
        "evaluators": evaluators,
        **{name: {"qwk": v["qwk"], "spearman": v["spearman"]} for name, v in evaluators.items()},
        "mean_mark_by_kind": scores["_by_kind"],
        "llm_fallbacks": scores["_llm_fallbacks"],
        "llm_ms_median": scores["_llm_ms_median"],
        **leak,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'evaluator':20} {'qwk':>6} {'rho':>6} {'mae':>5} {'type acc':>8}"]
    for name, v in result["evaluators"].items():
        lines.append(
            f"{name:20} {v['qwk']:>6} {v['spearman']!s:>6} {v['mae']:>5} "
            f"{v['feedback_type_accuracy']:>8}"
        )
    lines.append("")
    names = list(result["evaluators"])
    lines.append(f"{'kind':12} {'n':>3} {'ref':>5} " + " ".join(f"{n[:10]:>10}" for n in names))
    for kind, v in result["mean_mark_by_kind"].items():
        lines.append(
            f"{kind:12} {v['n']:>3} {v['reference']:>5} " + " ".join(f"{v[n]:>10}" for n in names)
        )
    lines.append("")
    for key in ("followups", "followup_leak_rate", "followup_template_leak_rate",
                "followup_llm_raw_leak_rate", "llm_fallbacks", "llm_ms_median"):  # fmt: skip
        if key in result:
            lines.append(f"{key}: {result[key]}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["cpu", "gpu", "fake", "gpu-sim"], default="cpu")
    parser.add_argument("--no-llm", action="store_true", help="keyword evaluators only")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
