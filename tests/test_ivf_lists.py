import random

import numpy as np
import pytest

from reasonedit_plugin import ivf_lists
from reasonedit_plugin.ivf_lists import IvfLists


def _check(lists: IvfLists, model: dict[int, dict[int, float]]) -> None:
    for c, members in model.items():
        assert sorted(lists.rows_of(c).tolist()) == sorted(members)
    order = np.array(sorted(model, key=lambda c: -c))  # any order of lists, some repeated lengths
    rows, rad, lens = lists.gather(order)
    assert lens.tolist() == [len(model[c]) for c in order]
    at = 0
    for c, m in zip(order.tolist(), lens.tolist()):
        got = dict(zip(rows[at:at + m].tolist(), rad[at:at + m].tolist()))
        assert got == {r: np.float32(v) for r, v in model[c].items()}
        assert rows[at:at + m].tolist() == lists.rows_of(c).tolist()  # each list's rows in list order
        at += m


@pytest.mark.parametrize("long", [0, 10**9])  # gather by copying each list's stretch / by one index
def test_lists_follow_adds_drops_and_renumbering(monkeypatch, long):
    """A model of dicts against the flat buffer, through rebuilds, growth past every list's room (moves and
    compactions) and swap-removals."""
    monkeypatch.setattr(ivf_lists, "_LONG", long)
    rng = random.Random(0)
    lists = IvfLists()
    assign = np.array([rng.randrange(5) for _ in range(40)])
    rad = np.array([rng.random() for _ in range(40)], np.float32)
    lists.rebuild(6, assign, rad)  # list 5 is empty
    model = {c: {} for c in range(6)}
    for r, (c, x) in enumerate(zip(assign.tolist(), rad.tolist())):
        model[c][r] = x
    _check(lists, model)
    assert lists.rows_of(0).tolist() == [r for r in range(40) if assign[r] == 0]  # rows in order
    next_row = 40
    for step in range(3000):
        c = rng.randrange(6)
        if model[c] and rng.random() < 0.3:
            row = rng.choice(sorted(model[c]))
            lists.drop(c, row)
            del model[c][row]
        elif model[c] and rng.random() < 0.1:
            old = rng.choice(sorted(model[c]))
            lists.replace(c, old, next_row)
            model[c][next_row] = model[c].pop(old)
            next_row += 1
        else:
            x = rng.random()
            lists.add(c, next_row, x)
            model[c][next_row] = x
            next_row += 1
        if step % 97 == 0:
            _check(lists, model)
    _check(lists, model)
    live = sum(len(m) for m in model.values())
    assert len(lists._rows) <= 8 * live + 64  # dead space is reclaimed, not grown without end


def test_gather_of_nothing():
    lists = IvfLists()
    lists.rebuild(3, np.array([0, 0, 2]), np.ones(3, np.float32))
    rows, rad, lens = lists.gather(np.array([1], np.int64))
    assert len(rows) == len(rad) == 0 and lens.tolist() == [0]
    rows, _, _ = lists.gather(np.zeros(0, np.int64))
    assert len(rows) == 0
