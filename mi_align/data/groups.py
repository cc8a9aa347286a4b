"""Task groups recovered from the data: examples that are variants of one task.

Resampling and splitting must keep such variants together (they are correlated; a row-level
split puts near-copies on both sides and overstates certainty). Built-in code sets carry no
task id, so groups are recovered from the responses themselves.

Example:
    >>> from mi_align.data.chat import Conversation, Message
    >>> c = lambda r: Conversation((Message("user", "q"), Message("assistant", r)))
    >>> response_groups([c("def f(x): return x"), c("def g(x): return x"), c("print(1)")])
    [0, 0, 1]
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from mi_align.data.chat import Conversation

_TOKEN = re.compile(r"\w+|[^\w\s]")


def response_groups(data: Sequence[Conversation], threshold: float = 0.75) -> list[int]:
    """Group label per conversation (0, 1, ... by first appearance): single-linkage clusters of
    final responses whose word/punctuation sequences have a ``difflib`` ratio >= ``threshold``.

    Identical responses always share a group (so paired datasets that share responses stay
    together). On the built-in code sets this recovers the generator's tasks exactly (48 × 5 in
    ``insecure``, 8 × 5 in ``insecure_heldout``; tested against the build script): variants of
    one task differ only in names (ratio >= 0.75), different tasks share little (<= 0.71).
    """
    seqs = [_TOKEN.findall(c.response) for c in data]
    parent = list(range(len(seqs)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    matcher = difflib.SequenceMatcher(autojunk=False)
    for i, seq in enumerate(seqs):
        matcher.set_seq2(seq)
        for j in range(i):
            if find(i) == find(j):
                continue
            matcher.set_seq1(seqs[j])
            if (matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold
                    and matcher.ratio() >= threshold):
                parent[find(i)] = find(j)
    index: dict[int, int] = {}
    return [index.setdefault(find(i), len(index)) for i in range(len(seqs))]
