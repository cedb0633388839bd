"""Spend pictures for the admin, drawn on the server: where the budget's current month (and
hour) stand, as a bar, and the month's daily spend by model, as stacked bars in inline SVG.
This module computes the figures and the geometry; the templates
(admin/llm/includes/budget_bars.html, daily_spend_chart.html) only place them. No JavaScript
and nothing from a CDN: the admin works offline and shows the same picture to every browser.

Run inside the inspected tenant (the admin's pages are): the selectors read its rows only."""

import datetime
from dataclasses import dataclass
from typing import ClassVar

from llm import selectors
from llm.money import format_micros

# Distinct from each other, and the amber of "reserved" in the budget bar comes late; cycled
# past eight models.
PALETTE = ("#417690", "#5f9e5f", "#7b61a8", "#b84a5c", "#3aa0b3", "#8c6a3f", "#e8a33d", "#a3a33a")


def _n(value: float) -> str:
    """A coordinate or percentage for SVG and CSS: always a dot, whatever the locale."""
    return f"{value:.2f}"


@dataclass(frozen=True)
class ThresholdMark:
    percent: int
    position: str  # percent of the bar's width
    crossed: bool


@dataclass(frozen=True)
class BudgetBar:
    """One period of the budget: spent and reserved against the cap. The bar spans the cap, or
    what is spent and held when that is more (a cap lowered below the month's spend)."""

    name: str  # "monthly" | "hourly"
    spent: str
    reserved: str
    cap: str
    remaining: str
    over_by: str | None
    spent_width: str
    reserved_width: str
    cap_position: str
    thresholds: list[ThresholdMark]
    resets_at: datetime.datetime


def budget_bar(period: selectors.PeriodStatus, thresholds=(), crossed=()) -> BudgetBar:
    used = period.spent_micros + period.reserved_micros
    scale = max(period.cap_micros, used, 1)
    return BudgetBar(
        name=period.period,
        spent=format_micros(period.spent_micros),
        reserved=format_micros(period.reserved_micros),
        cap=format_micros(period.cap_micros),
        remaining=format_micros(period.remaining_micros),
        over_by=format_micros(used - period.cap_micros) if used > period.cap_micros else None,
        spent_width=_n(100 * period.spent_micros / scale),
        reserved_width=_n(100 * period.reserved_micros / scale),
        cap_position=_n(100 * period.cap_micros / scale),
        thresholds=[
            ThresholdMark(t, _n(t * period.cap_micros / scale), t in crossed) for t in sorted(thresholds)
        ],
        resets_at=period.resets_at,
    )


def budget_bars() -> list[BudgetBar] | None:
    """The inspected tenant's budget periods in progress, month first; None without a budget.
    Alerts are per month, so only the monthly bar marks the thresholds."""
    status = selectors.budget_status()
    if status is None:
        return None
    bars = [budget_bar(status.monthly, status.thresholds, status.thresholds_crossed)]
    if status.hourly is not None:
        bars.append(budget_bar(status.hourly))
    return bars


@dataclass(frozen=True)
class Segment:
    """One model's spend on one day: a rectangle of that day's stacked bar."""

    day: datetime.date
    model: str
    micros: int
    label: str
    color: str
    x: str
    y: str
    width: str
    height: str


@dataclass(frozen=True)
class LegendEntry:
    model: str
    color: str
    total: str


@dataclass(frozen=True)
class Tick:
    at: str  # x of a day label, y of a grid line
    label: str


# In the SVG's own units (it scales down with the page): room on the left for the grid's
# amounts, at the bottom for the day numbers.
WIDTH, HEIGHT = 860, 250
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 78, WIDTH - 8, 10, HEIGHT - 24


@dataclass(frozen=True)
class DailySpendChart:
    month: datetime.date
    total: str
    segments: list[Segment]
    legend: list[LegendEntry]
    day_ticks: list[Tick]
    grid: list[Tick]
    width: ClassVar[int] = WIDTH
    height: ClassVar[int] = HEIGHT
    left: ClassVar[int] = PLOT_LEFT
    plot_right: ClassVar[int] = PLOT_RIGHT
    top: ClassVar[int] = PLOT_TOP
    plot_bottom: ClassVar[int] = PLOT_BOTTOM
    label_y: ClassVar[int] = HEIGHT - 8


def _nice_step(micros: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... µUSD at or above `micros`: grid lines at round
    amounts, in whole µUSD."""
    step = 1
    while True:
        for multiple in (1, 2, 5):
            if multiple * step >= micros:
                return multiple * step
        step *= 10


def _scale(highest: int) -> tuple[int, int]:
    """The chart's top and its grid step: at most five steps, the top just above the highest
    day (an empty month still gets a scale)."""
    highest = max(highest, 5)
    step = _nice_step(highest / 5)
    return -(-highest // step) * step, step


def daily_spend_chart(spend: dict[datetime.date, dict[str, int]], month: datetime.date) -> DailySpendChart:
    """Stacked bars, one per UTC day of `month` (every day has its slot, so the month's shape
    reads at a glance), one segment per model, the month's biggest model at the bottom."""
    totals: dict[str, int] = {}
    for models in spend.values():
        for model, micros in models.items():
            totals[model] = totals.get(model, 0) + micros
    order = sorted(totals, key=lambda model: (-totals[model], model))
    colors = {model: PALETTE[i % len(PALETTE)] for i, model in enumerate(order)}
    days = ((month.replace(day=28) + datetime.timedelta(days=4)).replace(day=1) - month).days
    top, step = _scale(max((sum(models.values()) for models in spend.values()), default=0))
    plot_width, plot_height = PLOT_RIGHT - PLOT_LEFT, PLOT_BOTTOM - PLOT_TOP
    slot = plot_width / days
    segments = []
    for day, models in sorted(spend.items()):
        x = PLOT_LEFT + (day.day - 1) * slot + slot * 0.15  # bars 70% of their slot, centred
        base = float(PLOT_BOTTOM)
        for model in (m for m in order if models.get(m)):
            height = plot_height * models[model] / top
            base -= height
            segments.append(
                Segment(
                    day=day,
                    model=model,
                    micros=models[model],
                    label=f"{day:%Y-%m-%d} {model}: {format_micros(models[model])}",
                    color=colors[model],
                    x=_n(x),
                    y=_n(base),
                    width=_n(slot * 0.7),
                    height=_n(height),
                )
            )
    return DailySpendChart(
        month=month,
        total=format_micros(sum(totals.values())),
        segments=segments,
        legend=[LegendEntry(model, colors[model], format_micros(totals[model])) for model in order],
        day_ticks=[Tick(_n(PLOT_LEFT + (d - 0.5) * slot), str(d)) for d in range(1, days + 1)],
        grid=[
            Tick(_n(PLOT_BOTTOM - plot_height * amount / top), format_micros(amount))
            for amount in range(0, top + 1, step)
        ],
    )


def current_month_chart() -> DailySpendChart:
    """The inspected tenant's spend this UTC month (by the database clock), day by day."""
    month = selectors.current_utc_month()
    return daily_spend_chart(selectors.daily_spend_by_model(month_start=month), month)
