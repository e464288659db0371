"""The numpy floor: one process reads the shards with pyarrow and computes the binary workload's
metrics (the TFMA config's) per slice with vectorised numpy — no Beam, no framework.

It is the speed a hand-written, single-purpose script reaches; headstream's target is to stay within
1.5x of it while being a general, distributed pipeline. Prints one JSON line with rows, seconds and a
few metrics (so a run can be checked for sanity).
"""
from __future__ import annotations

import glob
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq

NUM_BUCKETS = 10_000


def evaluate(pattern: str) -> dict:
    start = time.time()
    countries: list[str] = []
    n_slices = 6  # Overall + 5 countries, grown on demand
    hist_pos = np.zeros((n_slices, NUM_BUCKETS + 1))
    hist_neg = np.zeros((n_slices, NUM_BUCKETS + 1))
    sums = np.zeros((n_slices, 8))  # w, w*label, w*prob, w*bce, tp, fp, tn, fn at 0.5
    rows = 0
    for path in sorted(glob.glob(pattern)):
        pf = pq.ParquetFile(path)
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg, columns=['country', 'w', 'click_logit', 'click_label'])
            rows += t.num_rows
            country = t.column('country').combine_chunks()
            names = country.dictionary.to_pylist()
            codes_local = country.indices.to_numpy()
            remap = np.array([countries.index(n) if n in countries else
                              (countries.append(n) or len(countries) - 1) for n in names])
            codes = remap[codes_local] + 1
            w = t.column('w').to_numpy().astype(np.float64)
            x = t.column('click_logit').to_numpy()
            y = t.column('click_label').to_numpy().astype(np.float64)
            p32 = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
            p = p32.astype(np.float64)
            bucket = np.minimum((p32 * NUM_BUCKETS).astype(np.int64), NUM_BUCKETS)
            bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
            pred = p > 0.5
            pos = y > 0
            cols = np.stack([w, w * y, w * p, w * bce, w * (pred & pos), w * (pred & ~pos),
                             w * (~pred & ~pos), w * (~pred & pos)], axis=1)
            for slice_codes in (np.zeros_like(codes), codes):
                key = slice_codes * (NUM_BUCKETS + 1) + bucket
                size = n_slices * (NUM_BUCKETS + 1)
                hist_pos += np.bincount(key, w * pos, size).reshape(n_slices, -1)
                hist_neg += np.bincount(key, w * ~pos, size).reshape(n_slices, -1)
                for j in range(cols.shape[1]):
                    sums[:, j] += np.bincount(slice_codes, cols[:, j], n_slices)
    results = {}
    for s, name in enumerate(['Overall'] + ['country:%s' % c for c in countries]):
        tp = np.cumsum(hist_pos[s][::-1])[::-1]
        fp = np.cumsum(hist_neg[s][::-1])[::-1]
        tpr = tp / max(tp[0], 1e-300)
        fpr = fp / max(fp[0], 1e-300)
        auc = float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2) + fpr[-1] * tpr[-1] / 2)
        w_sum, wl, wp, wbce, tp5, fp5, tn5, fn5 = sums[s]
        results[name] = {
            'weighted_example_count': w_sum, 'auc': auc, 'mean_label': wl / w_sum,
            'mean_prediction': wp / w_sum, 'calibration': wp / wl, 'binary_crossentropy': wbce / w_sum,
            'binary_accuracy': (tp5 + tn5) / w_sum, 'precision': tp5 / (tp5 + fp5),
            'recall': tp5 / (tp5 + fn5)}
    return {'rows': rows, 'seconds': time.time() - start, 'overall': results['Overall']}


if __name__ == '__main__':
    print(json.dumps(evaluate(sys.argv[1])))
