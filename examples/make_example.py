"""Writes the bundled example dataset (examples/data/part-0000{0..3}.parquet), deterministically.

    python examples/make_example.py

20,000 rows of a made-up ads model in 4 shards: a click head (one logit, 0/1 label, example
weight `w`), a 3-class topic head (3 logits per row, label 0..2), a dwell-time regression head
(predicted and actual minutes on the page), slice columns `country` and `device`, and an event
time `ts` (one day, 2026-11-01 UTC) for windowed evaluation. The labels are drawn from the logits,
so AUC is about 0.8 and the model is well calibrated.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS_PER_SHARD = 5000
SHARDS = 4
COUNTRIES = np.array(['US', 'JP', 'DE', 'BR'])
DEVICES = np.array(['mobile', 'desktop'])
START = np.datetime64('2026-11-01T00:00:00', 'us')


def make_shard(seed: int, rows: int = ROWS_PER_SHARD) -> pa.Table:
    rng = np.random.default_rng(seed)
    country = rng.choice(COUNTRIES, rows, p=[0.4, 0.3, 0.2, 0.1])
    device = rng.choice(DEVICES, rows, p=[0.6, 0.4])
    # Desktop users click a little more; the model knows it.
    click_logit = (rng.normal(-0.5, 1.8, rows) + 0.4 * (device == 'desktop')).astype(np.float32)
    click_label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-click_logit))).astype(np.int64)
    topic_logits = rng.normal(0.0, 1.5, (rows, 3)).astype(np.float32)
    topic_label = np.argmax(topic_logits + rng.gumbel(size=(rows, 3)), axis=1).astype(np.int64)
    seconds = np.sort(rng.integers(0, 86400, rows))
    w = rng.uniform(0.5, 1.5, rows).round(2).astype(np.float32)
    # Drawn last, so the other columns stay what they were before this head was added.
    dwell_pred = rng.gamma(4.0, 0.75, rows).astype(np.float32)
    dwell_label = np.maximum(dwell_pred + rng.normal(0.0, 1.0, rows), 0.0).astype(np.float32)
    return pa.table({
        'ts': pa.array(START + seconds.astype('timedelta64[s]'), pa.timestamp('us', tz='UTC')),
        'country': pa.array(country).dictionary_encode(),
        'device': pa.array(device).dictionary_encode(),
        'w': w,
        'click_logit': click_logit.round(3),
        'click_label': click_label,
        'topic_logits': pa.FixedSizeListArray.from_arrays(topic_logits.round(3).reshape(-1), 3)
                        .cast(pa.list_(pa.float32())),
        'topic_label': topic_label,
        'dwell_pred': dwell_pred.round(2),
        'dwell_label': dwell_label.round(2),
    })


def main() -> None:
    out = os.path.join(HERE, 'data')
    os.makedirs(out, exist_ok=True)
    for i in range(SHARDS):
        pq.write_table(make_shard(seed=1000 + i), os.path.join(out, 'part-%05d.parquet' % i),
                       compression='zstd', row_group_size=2500)
    print('wrote %d rows in %d shards to %s' % (ROWS_PER_SHARD * SHARDS, SHARDS, out))


if __name__ == '__main__':
    main()
