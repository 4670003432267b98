import random
import statistics

import pytest
import torch

from reasonedit_plugin.hubness import HubnessTable


def brute_sigma(keys: dict[int, torch.Tensor], k: int) -> dict[int, float]:
    out = {}
    for i, ki in keys.items():
        pairs = sorted((float(torch.dist(ki.double(), kj.double())), j) for j, kj in keys.items() if j != i)
        out[i] = statistics.median(d for d, _ in pairs[:k]) if pairs else 1.0
    return out


@pytest.mark.parametrize("k", [1, 3, 30])
def test_incremental_equals_brute_force(k):
    rng = random.Random(k)
    g = torch.Generator().manual_seed(k)
    table, keys, next_id = HubnessTable(4, k), {}, 0
    for step in range(150):
        if keys and rng.random() < 0.35:
            victim = rng.choice(sorted(keys))
            table.remove(victim)
            del keys[victim]
        else:
            # duplicates and ties on purpose: a coarse grid of points
            key = torch.randint(0, 3, (4,), generator=g).float()
            table.add(next_id, key)
            keys[next_id] = key
            next_id += 1
        if step % 10 == 0 or step == 149:
            got, want = table.sigma_table(), brute_sigma(keys, k)
            assert got.keys() == want.keys()
            for i in want:
                assert got[i] == pytest.approx(want[i], abs=1e-9), (step, i)


def test_keys_roundtrip_after_swap_remove():
    table = HubnessTable(2, 2)
    for i in range(5):
        table.add(i, torch.tensor([float(i), 0.0]))
    table.remove(1)
    assert table.keys([4, 0]).tolist() == [[4.0, 0.0], [0.0, 0.0]]
    with pytest.raises(KeyError):
        table.add(0, torch.zeros(2))
