"""Makes `import tensorflow` fail as if TensorFlow were not installed.

`block()` puts a finder first on `sys.meta_path` that refuses `tensorflow` and its submodules, so
code that imports it by accident fails loudly instead of passing because TensorFlow happens to be
installed. Packages that import TensorFlow themselves (Keras with its TensorFlow backend, TFMA's
package) fail with it; files merely shipped in them (TFMA's protos, which the TFMA writer loads
without running TFMA's `__init__`) stay readable.
Used by tests/conftest.py (`HEADSTREAM_WITHOUT_TENSORFLOW=1 pytest -m "not tf"`) and by the
subprocess checks that the pipeline evaluates without TensorFlow.
"""
from __future__ import annotations

import importlib.abc
import sys

BLOCKED = ('tensorflow',)
ENV = 'HEADSTREAM_WITHOUT_TENSORFLOW'


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.', 1)[0] in BLOCKED:
            raise ModuleNotFoundError('No module named {!r} (blocked: TensorFlow is treated as '
                                      'not installed)'.format(name), name=name)
        return None


def block() -> None:
    """Refuses every later import of the blocked packages; an already imported one is an error."""
    loaded = sorted(m for m in sys.modules if m.split('.', 1)[0] in BLOCKED)
    if loaded:
        raise RuntimeError('already imported, cannot be blocked: {}'.format(', '.join(loaded)))
    if not any(isinstance(f, _Refuse) for f in sys.meta_path):
        sys.meta_path.insert(0, _Refuse())
