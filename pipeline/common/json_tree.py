"""Every dict in a JSON tree (a Keras model config): the one walk the config's readers and rewriters share."""

from __future__ import annotations

from collections.abc import Iterator


def dicts(tree) -> Iterator[dict]:
    """Every dict in `tree` (dicts and lists, as `json.loads` gives them), parents before their children, in
    document order. A caller may change a dict's values when it is given it: its children are read after."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
