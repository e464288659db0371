"""Deterministic benchmark data: N rows in sharded Parquet, for headstream, TFMA and the numpy floor.

Columns (one row per example):
  country            string, 5 values (the slice column)
  w                  float32 example weight in [0.5, 1.5)
  click_logit        float32 logit of the binary head; click_prob = sigmoid (TFMA needs probabilities)
  click_label        int64 in {0, 1}, drawn from the logit so AUC is ~0.8
With `five_heads=True` also:
  topic_logits list<float32>[10], topic_label int64;  tags_logits list<float32>[20],
  tags_labels list<int8>[20] multi-hot;  watch_logit float32, watch_label float32;
  count_logit float32, count_label int64 (Poisson).
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COUNTRIES = np.array(['US', 'JP', 'DE', 'BR', 'IN'])


def _list_column(values: np.ndarray) -> pa.ListArray:
    rows, width = values.shape
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))


def make_shard(rows: int, seed: int, five_heads: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    logit = rng.normal(0.0, 2.0, rows).astype(np.float32)
    prob = (1.0 / (1.0 + np.exp(-logit.astype(np.float64)))).astype(np.float32)
    cols = {
        'country': pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), rows)]).dictionary_encode(),
        'w': rng.uniform(0.5, 1.5, rows).astype(np.float32),
        'click_logit': logit,
        'click_prob': prob,
        'click_label': (rng.random(rows) < prob).astype(np.int64),
    }
    if five_heads:
        topic = rng.normal(0.0, 1.5, (rows, 10)).astype(np.float32)
        cols['topic_logits'] = _list_column(topic)
        cols['topic_label'] = np.argmax(topic + rng.gumbel(size=topic.shape), axis=1).astype(np.int64)
        tags = rng.normal(-1.0, 2.0, (rows, 20)).astype(np.float32)
        cols['tags_logits'] = _list_column(tags)
        cols['tags_labels'] = _list_column(
            (rng.random((rows, 20)) < 1.0 / (1.0 + np.exp(-tags))).astype(np.int8))
        watch = rng.normal(3.0, 1.0, rows).astype(np.float32)
        cols['watch_logit'] = watch
        cols['watch_label'] = (watch + rng.normal(0.0, 0.5, rows)).astype(np.float32)
        count = rng.normal(0.5, 0.5, rows).astype(np.float32)
        cols['count_logit'] = count
        cols['count_label'] = rng.poisson(np.exp(count)).astype(np.int64)
    return pa.table(cols)


def write_dataset(directory: str, rows: int, shards: int = 8, five_heads: bool = False,
                  row_group_size: int = 256 * 1024) -> str:
    """Writes `rows` rows in `shards` Parquet files; returns the glob pattern. Idempotent."""
    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, '_COMPLETE_%d_%d_%d' % (rows, shards, five_heads))
    pattern = os.path.join(directory, 'part-*.parquet')
    if os.path.exists(marker):
        return pattern
    per_shard = np.full(shards, rows // shards)
    per_shard[: rows % shards] += 1
    for i, n in enumerate(per_shard):
        pq.write_table(make_shard(int(n), seed=1000 + i, five_heads=five_heads),
                       os.path.join(directory, 'part-%05d.parquet' % i),
                       row_group_size=row_group_size)
    open(marker, 'w').close()
    return pattern
