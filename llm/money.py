"""Money: integer micro-USD (µUSD, 10^-6 USD) everywhere amounts are kept or summed.

A call's cost is computed once, in µUSD, rounded half up once (llm/prices.py). The seed's
cents columns are derived from µUSD by `micros_to_cents`, half up: a call's from its own
cost, a month's from its exact total, never by summing rounded figures.
"""

MICROS_PER_CENT = 10_000
MICROS_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per million tokens
# Prices above these are refused by the catalogue's checks: a typo (a missing decimal point)
# must not bankrupt or block a tenant. $1,000 per million tokens; $10 per request.
MAX_TOKEN_PRICE_MICROS = 1_000 * MICROS_PER_USD
MAX_REQUEST_FEE_MICROS = 10 * MICROS_PER_USD


def micros_to_cents(micros: int) -> int:
    """Whole cents, half up: 14_999 -> 1, 15_000 -> 2 (amounts are never negative)."""
    return (micros + MICROS_PER_CENT // 2) // MICROS_PER_CENT


def format_cents(amount: int) -> str:
    """Integer cents as dollars for people: 123456 -> "$1,234.56"."""
    return f"${amount / 100:,.2f}"


def format_micros(micros: int) -> str:
    """µUSD as dollars for people, exact: whole cents as "$1,234.56", anything finer with
    all six decimals ("$0.000150", "$12.345678")."""
    sign = "-" if micros < 0 else ""
    dollars, rest = divmod(abs(micros), MICROS_PER_USD)
    if rest % MICROS_PER_CENT == 0:
        return f"{sign}${dollars:,}.{rest // MICROS_PER_CENT:02d}"
    return f"{sign}${dollars:,}.{rest:06d}"
