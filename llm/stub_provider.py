"""A deterministic stand-in for the LLM provider: no network, no randomness.

Usage is derived from the payload alone, so a retried or redelivered task computes exactly
the same tokens as the first attempt: input tokens from the prompt's size, the cached part
of them from a checksum of the prompt (none, a quarter or a half, as a provider's prompt
cache would serve), output tokens and latency per endpoint. What the tokens cost is the
price catalogue's business (llm/prices.py), never the provider's or the prompt's.
"""

import json
import zlib
from dataclasses import dataclass

from llm.payloads import Endpoint

STUB_MODELS = ("stub-small", "stub-medium", "stub-large")  # priced by migration 0007
DEFAULT_MODEL: dict[Endpoint, str] = {
    "route": "stub-small",
    "explanation": "stub-medium",
    "investigation": "stub-large",
    "budget_optimization": "stub-medium",
}
OUTPUT_TOKENS: dict[Endpoint, int] = {
    "route": 16,
    "explanation": 220,
    "investigation": 640,
    "budget_optimization": 420,
}
BASE_LATENCY_MS: dict[Endpoint, int] = {
    "route": 80,
    "explanation": 700,
    "investigation": 2_400,
    "budget_optimization": 1_500,
}


MAX_TOKENS = 2**31 - 1  # the token columns are integers


@dataclass(frozen=True)
class LLMUsage:
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: int
    cached_input_tokens: int = 0  # of input_tokens

    def __post_init__(self):
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "latency_ms"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_TOKENS:
                raise ValueError(f"{name} must be an integer from 0 to {MAX_TOKENS}, got {value!r}")
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens cannot exceed input_tokens")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("model must be a non-empty label")


def canonical_prompt(prompt: dict) -> str:
    return json.dumps(prompt, sort_keys=True, separators=(",", ":"), default=str)


def usage_for(
    endpoint: Endpoint, prompt: dict, *, model: str | None = None, output_tokens: int | None = None
) -> LLMUsage:
    text = canonical_prompt(prompt)
    input_tokens = max(1, -(-len(text) // 4))  # ~4 characters a token
    cached_input_tokens = input_tokens * (zlib.crc32(text.encode()) % 3) // 4
    output_tokens = OUTPUT_TOKENS[endpoint] if output_tokens is None else output_tokens
    latency_ms = BASE_LATENCY_MS[endpoint] + output_tokens * 2 + input_tokens // 10
    return LLMUsage(
        model=model or DEFAULT_MODEL[endpoint],
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
        latency_ms=latency_ms,
    )


def route_for(prompt: dict) -> Endpoint:
    text = canonical_prompt(prompt).lower()
    if "budget" in text or "allocate" in text:
        return "budget_optimization"
    if "why" in text or "investigate" in text:
        return "investigation"
    return "explanation"


def explanation_for(prompt: dict) -> str:
    subject = ", ".join(
        f"{k}={prompt[k]}" for k in sorted(prompt) if k not in {"sleep_ms", "model", "output_tokens"}
    )
    return (
        f"[stub] The attribution result for {subject or 'this request'} follows from the deterministic model."
    )


def investigation_for(question: str) -> dict:
    seed = zlib.crc32(question.encode())
    channels = ["google_ads", "meta_ads", "tiktok_ads", "email", "organic_search"]
    lead = channels[seed % len(channels)]
    return {
        "question": question,
        "summary": f"[stub] {lead} explains most of the change asked about.",
        "findings": [
            {"channel": lead, "contribution_pct": 40 + seed % 30},
            {"channel": channels[(seed // 7) % len(channels)], "contribution_pct": 10 + seed % 20},
        ],
        "steps": ["load attribution results", "compare with the previous period", "rank channel deltas"],
    }


def allocate_budget(*, total_budget_cents: int, channels: dict[str, float]) -> dict[str, int]:
    """Split the budget in proportion to each channel's score, in whole cents summing exactly
    to the total (largest remainder; ties by channel name). Equal split if all scores are 0."""
    names = sorted(channels)
    weights = [channels[n] for n in names] if any(channels.values()) else [1] * len(names)
    total_weight = sum(weights)
    shares = [total_budget_cents * w / total_weight for w in weights]
    allocation = {n: int(s) for n, s in zip(names, shares, strict=True)}
    leftover = total_budget_cents - sum(allocation.values())
    by_remainder = sorted(
        zip(names, shares, strict=True), key=lambda item: (-(item[1] - int(item[1])), item[0])
    )
    for name, _ in by_remainder[:leftover]:
        allocation[name] += 1
    return allocation


def budget_recommendations_for(*, total_budget_cents: int, channels: dict[str, float]) -> dict:
    allocation = allocate_budget(total_budget_cents=total_budget_cents, channels=channels)
    best = max(allocation, key=lambda name: (allocation[name], name))
    return {
        "total_budget_cents": total_budget_cents,
        "allocations_cents": allocation,
        "synthesis": f"[stub] Shift spend towards {best}, which has the strongest return per dollar.",
    }
