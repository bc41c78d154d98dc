"""Output checks under load: the first few requests of every load point are greedy (the client
sends temperature 0, exactly max_tokens), so their answers are compared with the offline engine's
greedy answers to the same token ids, computed on the cell's offline load with the same sampling
(engines' EngineSession.greedy). A quantized model that answers "!!!!" once it is batched with
others, while its throughput looks fine, is caught here and by no load figure.

Why not exact match alone: a healthy engine's batch-dependent rounding can flip a near-tie
between the two most likely tokens, after which greedy text legitimately differs. A broken one
differs from the first tokens, or degenerates into one short unit repeated. So a check agrees when the
server's text follows the reference for at least AGREE_TOKENS tokens (or all of it), and the cell
fails when more than half of its checks disagree, or when any answer under load degenerates where
the offline answer to the same prompt did not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: reference tokens a server's answer must follow before a flip counts as rounding, not breakage
AGREE_TOKENS = 8
#: an answer of at least this many characters whose last half repeats a unit of at most
#: DEGENERATE_MAX_UNIT characters is degenerate
DEGENERATE_MIN_CHARS = 8
DEGENERATE_MAX_UNIT = 4

Decode = Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class Check:
    exact: bool
    first_divergence: int  # reference tokens the server's text follows (the reference's length when exact)
    degenerate: bool  # the server's answer ends in one short unit repeated
    reference_degenerate: bool  # ... and so did the offline answer (the model, not the batching)

    def agrees(self, length: int) -> bool:
        return self.exact or self.first_divergence >= min(AGREE_TOKENS, length)


def degenerate(text: str) -> bool:
    """The last half of the answer repeats one short unit ("!!!!", " the the the", "\n\n"): on
    the text, since a tokenizer merges a run of one character into a few long tokens."""
    tail = text[len(text) // 2 :]
    if len(text) < DEGENERATE_MIN_CHARS or not tail:
        return False
    return any((tail[:k] * (len(tail) // k + 1)).startswith(tail) for k in range(1, DEGENERATE_MAX_UNIT + 1))


def followed(reference: Sequence[int], text: str, decode: Decode) -> int:
    """How many leading reference tokens the server's text reproduces."""
    count = 0
    for k in range(1, len(reference) + 1):
        piece = decode(reference[:k])
        if piece.endswith("\ufffd"):  # a token that ends inside a UTF-8 character: wait for the rest
            continue
        if not text.startswith(piece):
            break
        count = k
    return count


def check(reference: Sequence[int], text: str, decode: Decode) -> Check:
    """One server answer against the offline greedy answer to the same prompt."""
    expected = decode(reference)
    exact = text == expected
    return Check(
        exact=exact,
        first_divergence=len(reference) if exact else followed(reference, text, decode),
        degenerate=degenerate(text),
        reference_degenerate=degenerate(expected),
    )


def point_summary(checks: list[Check], lengths: list[int]) -> dict[str, Any]:
    """A load point's `output_check` (results schema SERVING_POINT); `lengths`: each check's
    tokens as sent."""
    return {
        "checked": len(checks),
        "exact": sum(c.exact for c in checks),
        "agree": sum(c.agrees(n) for c, n in zip(checks, lengths)),
        "first_divergence": [c.first_divergence for c in checks],
        "degenerate": sum(c.degenerate and not c.reference_degenerate for c in checks),
        "reference_degenerate": sum(c.reference_degenerate for c in checks),
    }


def verdict(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The cell's columns from every point's `output_check`: `output_check_ok` and a line that
    says why."""
    summaries = [p["output_check"] for p in points if p.get("output_check")]
    if not summaries:
        return {}
    checked = sum(s["checked"] for s in summaries)
    exact = sum(s["exact"] for s in summaries)
    early = checked - sum(s["agree"] for s in summaries)
    broken = sum(s["degenerate"] for s in summaries)
    shown = (
        f"{exact}/{checked} greedy answers under load equal the offline engine's, {early} left it within "
        f"{AGREE_TOKENS} tokens, {broken} degenerate"
    )
    if broken:
        return {"output_check_ok": False, "output_check_note": f"degenerate output under load: {shown}"}
    if early * 2 > checked:
        return {"output_check_ok": False, "output_check_note": f"not the engine's answers: {shown}"}
    return {"output_check_ok": True, "output_check_note": shown}
