"""Load a price file into the catalogue: `manage.py load_prices FILE` (JSON or YAML).

The file is a list of periods (or {"prices": [...]}), each with `model`, `provider`,
`input_usd_per_mtok`, `cached_input_usd_per_mtok`, `output_usd_per_mtok` (USD per million
tokens, as decimal strings or numbers, at most six decimals), optional `request_fee_usd`, and
`valid_from` (ISO-8601 with a time zone). Loading the same file again changes nothing; a new
period closes the model's open one where it starts. Runs as the owner (DATABASE_OWNER_URL).
"""

import datetime
import decimal
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from llm.money import MICROS_PER_USD
from llm.services.prices import InvalidPrice, PriceToAdd, add_price_period

USD_FIELDS = {
    "input_usd_per_mtok": "input_micros_per_mtok",
    "cached_input_usd_per_mtok": "cached_input_micros_per_mtok",
    "output_usd_per_mtok": "output_micros_per_mtok",
    "request_fee_usd": "request_fee_micros",
}
KNOWN_KEYS = {"model", "provider", "valid_from", *USD_FIELDS}
MAX_USD = 10**6  # far above any price the catalogue accepts; only keeps the arithmetic small


def _micros(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | decimal.Decimal):
        raise CommandError(f"{where}: expected a decimal number of USD, got {value!r}")
    try:
        amount = decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise CommandError(f"{where}: {value!r} is not a number") from None
    if not amount.is_finite() or abs(amount) > MAX_USD:
        raise CommandError(f"{where}: {value} USD is out of range")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise CommandError(f"{where}: {value} USD is not a whole number of micro-dollars")
    return int(micros)


def _period(entry: object, index: int) -> PriceToAdd:
    where = f"prices[{index}]"
    if not isinstance(entry, dict):
        raise CommandError(f"{where}: expected an object")
    if unknown := set(entry) - KNOWN_KEYS:
        raise CommandError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = {"model", "provider", "valid_from", *list(USD_FIELDS)[:3]} - set(entry)
    if missing:
        raise CommandError(f"{where}: missing {', '.join(sorted(missing))}")
    try:
        valid_from = datetime.datetime.fromisoformat(str(entry["valid_from"]))
    except ValueError:
        raise CommandError(f"{where}.valid_from: not an ISO-8601 time: {entry['valid_from']!r}") from None
    amounts = {
        field: _micros(entry[key], f"{where}.{key}") for key, field in USD_FIELDS.items() if key in entry
    }
    return PriceToAdd(
        model=str(entry["model"]), provider=str(entry["provider"]), valid_from=valid_from, **amounts
    )


def read_price_file(path: Path) -> list[PriceToAdd]:
    text = path.read_text()
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        data = yaml.safe_load(text)
        data = json.loads(json.dumps(data, default=str), parse_float=decimal.Decimal)  # exact decimals
    else:
        data = json.loads(text, parse_float=decimal.Decimal)
    if isinstance(data, dict):
        data = data.get("prices")
    if not isinstance(data, list):
        raise CommandError('A price file is a list of periods, or {"prices": [...]}.')
    periods = [_period(entry, i) for i, entry in enumerate(data)]
    return sorted(periods, key=lambda p: (p.model, p.valid_from))


class Command(BaseCommand):
    help = "Load model prices from a JSON or YAML file into the price catalogue (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options):
        if not file.is_file():
            raise CommandError(f"No such file: {file}")
        periods = read_price_file(file)
        added = 0
        for period in periods:
            try:
                _, created = add_price_period(price=period)
            except InvalidPrice as error:
                raise CommandError(f"{error} ({added} period(s) added before it)") from None
            added += created
            state = "added" if created else "already there"
            self.stdout.write(f"{period.model} from {period.valid_from.isoformat()}: {state}")
        self.stdout.write(f"{added} period(s) added, {len(periods) - added} already there.")
