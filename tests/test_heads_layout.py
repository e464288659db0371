"""How the heads' modules depend on each other: the TF face's machinery (heads/tf_face/), the spec
containers (heads/spec.py) and the constructor checks (heads/validation.py) never import the
`Head` interface (heads/base.py), which imports the TF face only inside `create_estimator_spec`.
So there is no import cycle between them, not even a lazy one."""
from __future__ import annotations

import ast
import os

HEADS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'heads')


def _imports(path: str) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in the file, functions included."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ''
            found += [('%s.%s' % (module, alias.name), id(node) in top) for alias in node.names]
            found.append((module, id(node) in top))
    return found


def _below_base() -> list[str]:
    tf_face = os.path.join(HEADS, 'tf_face')
    return ([os.path.join(tf_face, name) for name in sorted(os.listdir(tf_face))
             if name.endswith('.py')]
            + [os.path.join(HEADS, 'spec.py'), os.path.join(HEADS, 'validation.py')])


def test_tf_face_spec_and_validation_never_import_base():
    paths = _below_base()
    assert len(paths) >= 7, paths
    for path in paths:
        for module, _ in _imports(path):
            assert module != 'heads.base', os.path.relpath(path, HEADS)


def test_base_imports_the_tf_face_only_when_a_spec_is_built():
    imports = _imports(os.path.join(HEADS, 'base.py'))
    lazy = [m for m, top in imports if m.startswith('heads.tf_face') and not top]
    assert lazy, imports
    assert not [m for m, top in imports if m.startswith('heads.tf_face') and top], imports
