"""Hybrid search's fusion (``services/search.py::fuse``): z-scores per list, weighted, summed."""

from __future__ import annotations

import numpy as np
import pytest

from lorebase.services.search import VECTOR_WEIGHT, Ranked, fuse


def _ranked(*pairs: tuple[int, float]) -> list[Ranked]:
    return [Ranked(pk, score) for pk, score in pairs]


def test_scores_not_only_ranks_decide() -> None:
    # 1 leads the vector list by far, 2 the keyword list by a hair; ranks alone (RRF) would tie them
    vector = _ranked((1, 0.9), (2, 0.3), (3, 0.2))
    keyword = _ranked((2, 10.0), (1, 9.9), (3, 1.0))
    assert [r.pk for r in fuse([vector, keyword])] == [1, 2, 3]


def test_the_weights_are_the_lists_and_the_vector_list_comes_first() -> None:
    vector = _ranked((1, 1.0), (2, 0.0))
    keyword = _ranked((2, 1.0), (1, 0.0))
    assert [r.pk for r in fuse([vector, keyword])] == [1, 2]  # vector weight 0.6 > 0.4
    assert [r.pk for r in fuse([vector, keyword], weights=(0.4, 0.6))] == [2, 1]
    assert pytest.approx(0.6) == VECTOR_WEIGHT


def test_a_chunk_missing_from_a_list_gets_that_list_s_lowest_score() -> None:
    vector = _ranked((1, 0.9), (2, 0.8), (3, 0.1))
    keyword = _ranked((4, 5.0), (1, 4.0), (3, 1.0))  # 2 not matched by keywords
    fused = {r.pk: r.score for r in fuse([vector, keyword])}
    assert set(fused) == {1, 2, 3, 4}
    # 2's keyword part is the keyword list's floor, the same as 3's (3 is last there): only their
    # vector z-scores tell them apart
    v = np.array([0.9, 0.8, 0.1])
    z = (v - v.mean()) / v.std()
    assert fused[2] - fused[3] == pytest.approx(VECTOR_WEIGHT * (z[1] - z[2]))


def test_empty_and_constant_lists_do_not_break_it() -> None:
    assert fuse([[], []]) == []
    only_vector = fuse([_ranked((1, 0.5), (2, 0.4)), []])
    assert [r.pk for r in only_vector] == [1, 2]
    same = fuse([_ranked((1, 0.5), (2, 0.5)), _ranked((2, 3.0), (1, 1.0))])  # no spread: z = 0
    assert [r.pk for r in same] == [2, 1]
    ties = fuse([_ranked((5, 1.0), (4, 1.0)), []])
    assert [r.pk for r in ties] == [4, 5]  # ties by pk
