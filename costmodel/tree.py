"""The cost tree: model > stack > block > op.

A ``Node`` has a repeat ``count``; identical blocks are built once and
multiplied, so a 96-layer model costs the same to build as a 2-layer one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

from .ops import Op


@dataclass
class Node:
    name: str
    level: str                     # model | stack | block
    children: list = field(default_factory=list)   # Node | Op
    count: int = 1

    def add(self, child: Union["Node", Op]) -> Union["Node", Op]:
        self.children.append(child)
        return child

    def walk(self, mult: int = 1, path: str = "") -> Iterator[tuple[str, int, Op]]:
        """Yield (path, total multiplicity, op) for every op below this node."""
        m = mult * self.count
        here = f"{path}/{self.name}" if path else self.name
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk(m, here)
            else:
                yield f"{here}/{c.name}", m, c

    def parents(self, path: str = "") -> dict:
        """Map op path -> path of its nearest enclosing *block* (or the op itself
        when it sits directly in a stack or the model)."""
        out = {}
        here = f"{path}/{self.name}" if path else self.name
        for c in self.children:
            if isinstance(c, Node):
                out.update(c.parents(here))
            else:
                p = f"{here}/{c.name}"
                out[p] = here if self.level == "block" else p
        return out

    def total(self, attr: str) -> float:
        return sum(m * getattr(op, attr) for _, m, op in self.walk())
