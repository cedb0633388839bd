"""A deterministic stand-in for the LLM provider: no network, no randomness.

Usage is derived from the payload alone, so a retried or redelivered task computes exactly
the same tokens and cost as the first attempt: input tokens from the prompt's size, output
tokens and latency per endpoint, cost from an integer price table (cents per 1,000 tokens).
"""

import json
import zlib
from dataclasses import dataclass

from llm.payloads import Endpoint, InvalidPayload

# Cents per 1,000 tokens: (input, output).
PRICES_CENTS_PER_1K_TOKENS: dict[str, tuple[int, int]] = {
    "stub-small": (15, 60),
    "stub-medium": (300, 1_200),
    "stub-large": (1_000, 3_000),
}
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


@dataclass(frozen=True)
class LLMUsage:
    model: str
    input_tokens: int
    output_tokens: int
    cost_cents: int
    latency_ms: int

    def __post_init__(self):
        for name in ("input_tokens", "output_tokens", "cost_cents", "latency_ms"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not self.model:
            raise ValueError("model must be a non-empty label")


def canonical_prompt(prompt: dict) -> str:
    return json.dumps(prompt, sort_keys=True, separators=(",", ":"), default=str)


def usage_for(
    endpoint: Endpoint, prompt: dict, *, model: str | None = None, simulated_cost_cents: int | None = None
) -> LLMUsage:
    model = model or DEFAULT_MODEL[endpoint]
    if model not in PRICES_CENTS_PER_1K_TOKENS:
        known = ", ".join(sorted(PRICES_CENTS_PER_1K_TOKENS))
        raise InvalidPayload(
            f"Invalid LLM task payload: prompt.model: unknown model {model!r} (known: {known})"
        )
    input_tokens = max(1, -(-len(canonical_prompt(prompt)) // 4))  # ~4 characters a token
    output_tokens = OUTPUT_TOKENS[endpoint]
    input_price, output_price = PRICES_CENTS_PER_1K_TOKENS[model]
    if simulated_cost_cents is None:
        cost_cents = -(-(input_tokens * input_price + output_tokens * output_price) // 1_000)
    else:
        cost_cents = simulated_cost_cents
    latency_ms = BASE_LATENCY_MS[endpoint] + output_tokens * 2 + input_tokens // 10
    return LLMUsage(model, input_tokens, output_tokens, cost_cents, latency_ms)


def route_for(prompt: dict) -> Endpoint:
    text = canonical_prompt(prompt).lower()
    if "budget" in text or "allocate" in text:
        return "budget_optimization"
    if "why" in text or "investigate" in text:
        return "investigation"
    return "explanation"


def explanation_for(prompt: dict) -> str:
    subject = ", ".join(f"{k}={prompt[k]}" for k in sorted(prompt) if k not in {"sleep_ms", "model"})
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
