def format_cents(amount: int) -> str:
    """Integer cents as dollars for people: 123456 -> "$1,234.56"."""
    return f"${amount / 100:,.2f}"
