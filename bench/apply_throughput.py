"""ApplyHeads alone: rows/s of the per-batch DoFn on batches already in memory (no Beam, no I/O).

    .venv/bin/python bench/apply_throughput.py CONFIG.yaml [--repeat 2]

Reads the config's input once, then runs one bundle of `ApplyHeads` over every batch, alternately
with and without the Overall slice merged from another spec's states (`derive_overall`), and
prints rows/s for each with the load average. The difference between this rate and a whole run's
is the reading, Beam and the fixed start-up.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import run as run_lib  # noqa: E402
from pipeline import sources  # noqa: E402
from pipeline.apply import ApplyHeads  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--repeat', type=int, default=2)
    args = parser.parse_args()
    config, files, dictionary_columns = run_lib.prepare(args.config)
    batches = []
    for path in files:
        for item in sources.plan_file(path, config.format):
            batches.extend(sources.read_item(item, config.columns(),
                                             dictionary_columns=dictionary_columns))
    rows = sum(b.batch.num_rows for b in batches)
    for _ in range(args.repeat):
        for derive in (False, True):
            dofn = ApplyHeads(config, 'bench', derive_overall=derive)
            dofn.setup()
            dofn.start_bundle()
            start = time.perf_counter()
            for b in batches:
                for _ in dofn.process(b):
                    pass
            n_out = len(list(dofn.finish_bundle()))
            seconds = time.perf_counter() - start
            print('derive_overall=%-5s %d rows, %d outputs in %.2f s = %.2fM rows/s  (load %.1f)'
                  % (derive, rows, n_out, seconds, rows / seconds / 1e6, os.getloadavg()[0]))


if __name__ == '__main__':
    main()
