"""Event-loop latency probe: how late a periodic Qt timer fires while the viewer is busy elsewhere.

Used by ``benchmarks/bench_gui_latency.py`` and reported by the widget tests (never asserted on).
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import Qt, QTimer

TICK_MS = 20


class LatencyProbe:
    """Records how late each tick of a ``TICK_MS`` timer fires in the running Qt event loop."""

    def __init__(self, tick_ms: int = TICK_MS):
        self.tick_ms = tick_ms
        self.late_ms: list[float] = []
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(tick_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.late_ms.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> dict[str, float]:
        self._timer.stop()
        late = np.asarray(self.late_ms)
        return {
            "ticks": int(late.size),
            **{f"p{q}_ms": round(float(np.percentile(late, q)), 2) for q in (50, 95, 99)},
            "max_ms": round(float(late.max()), 2),
            "over_100ms": int((late > 100).sum()),
        }

    def _tick(self) -> None:
        now = time.perf_counter()
        self.late_ms.append(max((now - self._last) * 1000 - self.tick_ms, 0.0))
        self._last = now
