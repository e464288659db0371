"""With HEADSTREAM_WITHOUT_TENSORFLOW=1 the tests run as if TensorFlow were not installed.

`HEADSTREAM_WITHOUT_TENSORFLOW=1 python -m pytest -m "not tf"` checks that every test not marked
`tf` (the pipeline, the array face, the writers, the report) needs no TensorFlow.
"""
import os

import _no_tensorflow

if os.environ.get(_no_tensorflow.ENV) == '1':
    _no_tensorflow.block()
