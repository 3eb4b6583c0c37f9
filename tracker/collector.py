"""The garbage collector held back while a process builds many long-lived rows.

Every row is a container, so at the default thresholds the collector runs every 700 new
objects, and rows alive across those runs reach the oldest generation, whose collections then
trace every row (and every cache) again and again: a third of the CPU of enriching a click,
or of loading and assessing a fraud scan's facts. The rows form no cycles, so nothing waits
any longer to be freed.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

FEW_COLLECTIONS = (100_000, 50, 100)  # gc thresholds while rows are built in bulk
# A flush or import batch (20,000 clicks, tracker.settings.FLUSH_MAX_CLICKS) makes some 200,000
# objects that live until it is stored: at 100,000 the collector traced them once or twice a
# batch (2 us a click); a batch of 5,000 had never reached it.
BATCH_COLLECTIONS = (1_000_000, 50, 100)
# One entry per few_collections() not left yet in this process: the thresholds before the first.
_held: list[tuple[int, int, int]] = []


@contextlib.contextmanager
def few_collections(thresholds: tuple[int, int, int] = FEW_COLLECTIONS) -> Iterator[None]:
    """The collector's thresholds raised (FEW_COLLECTIONS, BATCH_COLLECTIONS for the flusher's
    and importer's batches) while a batch of clicks is enriched and stored, a file imported or
    a fraud scan loads and assesses its facts. Nestable: the thresholds come back when the
    outermost holder leaves."""
    _held.append(_held[0] if _held else gc.get_threshold())
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        original = _held.pop()
        if not _held:
            gc.set_threshold(*original)
