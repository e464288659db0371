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
    """Reads every shard's row groups; per country, weighted sums and 10,000-bucket histograms of
    positives and negatives by predicted probability (AUC, AUC-PR, the plots' source); Overall is
    the sum of the countries (every row has one), as a hand-written script would do it."""
    start = time.time()
    countries: list[str] = []
    n_codes = 8  # country codes, grown on demand
    width = NUM_BUCKETS + 1
    hist_pos = np.zeros(n_codes * width)
    hist_neg = np.zeros(n_codes * width)
    sums = np.zeros((n_codes, 8))  # w, w*label, w*prob, w*bce, tp, fp, tn, fn at 0.5
    rows = 0
    for path in sorted(glob.glob(pattern)):
        pf = pq.ParquetFile(path, read_dictionary=['country'])
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg, columns=['country', 'w', 'click_logit', 'click_label'])
            rows += t.num_rows
            country = t.column('country').combine_chunks()
            if country.null_count:
                raise ValueError('%s: null country values are not expected' % path)
            remap = np.array([countries.index(n) if n in countries else
                              (countries.append(n) or len(countries) - 1)
                              for n in country.dictionary.to_pylist()], np.int64)
            if len(countries) > n_codes:
                raise ValueError('more than %d countries' % n_codes)
            codes = remap[country.indices.to_numpy()]
            w = t.column('w').to_numpy().astype(np.float64)
            x = t.column('click_logit').to_numpy()
            y = t.column('click_label').to_numpy().astype(np.float64)
            p32 = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
            bucket = np.minimum((p32 * NUM_BUCKETS).astype(np.int64), NUM_BUCKETS)
            x64 = x.astype(np.float64)
            bce = np.maximum(x64, 0) - x64 * y + np.log1p(np.exp(-np.abs(x64)))
            wy = w * y
            w_pred = np.where(p32 > 0.5, w, 0.0)
            wy_pred = w_pred * y
            key = codes * width + bucket
            hist_pos += np.bincount(key, wy, n_codes * width)
            hist_neg += np.bincount(key, w - wy, n_codes * width)
            for j, col in enumerate((w, wy, w * p32, w * bce, wy_pred, w_pred - wy_pred,
                                     (w - w_pred) - (wy - wy_pred), wy - wy_pred)):
                sums[:, j] += np.bincount(codes, col, n_codes)
    hist_pos = hist_pos.reshape(n_codes, width)[:len(countries)]
    hist_neg = hist_neg.reshape(n_codes, width)[:len(countries)]
    sums = sums[:len(countries)]
    hist_pos = np.vstack([hist_pos.sum(axis=0), hist_pos])  # row 0: Overall
    hist_neg = np.vstack([hist_neg.sum(axis=0), hist_neg])
    sums = np.vstack([sums.sum(axis=0), sums])
    results = {}
    for s, name in enumerate(['Overall'] + ['country:%s' % c for c in countries]):
        tp = np.cumsum(hist_pos[s][::-1])[::-1]  # positives at or above each bucket
        fp = np.cumsum(hist_neg[s][::-1])[::-1]
        tpr = tp / max(tp[0], 1e-300)
        fpr = fp / max(fp[0], 1e-300)
        auc = float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2) + fpr[-1] * tpr[-1] / 2)
        precision = tp / np.maximum(tp + fp, 1e-300)
        auc_pr = float(np.sum((tpr[:-1] - tpr[1:]) * precision[1:]) + tpr[-1] * precision[-1])
        w_sum, wl, wp, wbce, tp5, fp5, tn5, fn5 = sums[s]
        results[name] = {
            'weighted_example_count': w_sum, 'auc': auc, 'auc_pr': auc_pr,
            'mean_label': wl / w_sum, 'mean_prediction': wp / w_sum, 'calibration': wp / wl,
            'binary_crossentropy': wbce / w_sum, 'binary_accuracy': (tp5 + tn5) / w_sum,
            'precision': tp5 / (tp5 + fp5), 'recall': tp5 / (tp5 + fn5)}
    return {'rows': rows, 'seconds': time.time() - start, 'overall': results['Overall']}


if __name__ == '__main__':
    print(json.dumps(evaluate(sys.argv[1])))
