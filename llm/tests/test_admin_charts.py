"""The admin's spend chart geometry (llm/admin/charts.py), without a database: a slot per day
of the month, grid lines at round amounts, segments stacked by model in proportion. The
pages that draw it are tested in test_admin_budgets.py and test_admin_browser.py."""

import datetime

import pytest

from llm.admin import charts


def test_the_chart_has_a_slot_per_day_of_the_month_round_grid_lines_and_stacks_by_model():
    february = datetime.date(2027, 2, 1)
    chart = charts.daily_spend_chart(
        {
            datetime.date(2027, 2, 3): {"small": 70_000, "large": 2_255_000},
            datetime.date(2027, 2, 28): {"small": 5},
        },
        february,
    )
    assert [tick.label for tick in chart.day_ticks] == [str(day) for day in range(1, 29)]
    # The busiest day is $2.325000: five steps of $0.50 up to $2.50.
    assert [tick.label for tick in chart.grid] == ["$0.00", "$0.50", "$1.00", "$1.50", "$2.00", "$2.50"]
    assert [(s.day.day, s.model) for s in chart.segments] == [(3, "large"), (3, "small"), (28, "small")]
    large, small, _ = chart.segments
    # Stacked from the axis up, the month's biggest model first; heights in proportion.
    assert float(large.y) + float(large.height) == pytest.approx(chart.plot_bottom, abs=0.01)
    assert float(small.y) + float(small.height) == pytest.approx(float(large.y), abs=0.01)
    plot_height = chart.plot_bottom - chart.top
    assert float(large.height) == pytest.approx(plot_height * 2_255_000 / 2_500_000, abs=0.01)
    assert [(entry.model, entry.total) for entry in chart.legend] == [
        ("large", "$2.255000"),
        ("small", "$0.070005"),
    ]
    assert chart.total == "$2.325005"
    empty = charts.daily_spend_chart({}, datetime.date(2027, 1, 1))
    assert (len(empty.day_ticks), empty.segments, empty.legend) == (31, [], [])
    assert empty.grid[-1].label == "$0.000005"
