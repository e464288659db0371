"""Numbers and labels as the report page shows them: values (`fmt`), counts, tick labels, times,
windows and steps, anchors; and `finite`, the test every part of the page applies to a value.
"""
from __future__ import annotations

import datetime
import math
import re
from typing import Any


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: Any) -> str:
    """A number as the page shows it: 4 decimals, or 4 significant digits when very large or
    small; '—' for a missing or non-finite value."""
    if v is None:
        return '—'
    if isinstance(v, int) and not isinstance(v, bool):
        return '{:,}'.format(v)
    if not isinstance(v, float):
        return str(v)
    if not math.isfinite(v):
        return '—' if v != v else ('∞' if v > 0 else '−∞')
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return '%.4g' % v
    return '%.4f' % v


def fmt_count(v: Any) -> str:
    """A (weighted) count: whole numbers without decimals ('1,250'), others as `fmt`."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
        return '{:,}'.format(int(v))
    return fmt(v)


def fmt_tick(v: float) -> str:
    """A tick label: as few digits as the tick needs."""
    if v == 0:
        return '0'
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return '%.3g' % v
    return ('%.4f' % v).rstrip('0').rstrip('.')


def time_label(t: Any) -> str:
    if isinstance(t, datetime.datetime):
        t = t.astimezone(datetime.timezone.utc)
        return t.strftime('%Y-%m-%d %H:%M:%S').replace(' 00:00:00', '') + 'Z'
    return str(t)


def period_label(period: tuple) -> str:
    window, step = period
    parts = []
    if window is not None:
        parts.append('window %s' % time_label(window))
    if step is not None:
        parts.append('step %d' % step)
    return ', '.join(parts)


def slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_-]+', '-', text).strip('-') or 'x'
