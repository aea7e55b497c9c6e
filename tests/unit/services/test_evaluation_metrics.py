"""The evaluation metrics (``services/evaluations.py``, used by the API and ``lorebase eval``)
against values worked out by hand (trec_eval definitions: linear gain, log2 discount, ideal
ranking cut at k; recall over judged-relevant documents; reciprocal rank of the first relevant)."""

from __future__ import annotations

import math

import pytest

from lorebase.services.evaluation_requests import scorable
from lorebase.services.evaluations import (
    ModeScore,
    mrr_at,
    ndcg_at,
    per_query,
    query_metrics,
    recall_at,
)


def test_ndcg_of_a_perfect_ranking_is_one() -> None:
    assert ndcg_at(["a", "b", "c"], {"a": 1, "b": 1}, 10) == pytest.approx(1.0)


def test_ndcg_of_the_only_relevant_doc_at_rank_two_is_one_over_log2_of_three() -> None:
    assert ndcg_at(["x", "a", "y"], {"a": 1}, 10) == pytest.approx(1 / math.log2(3))


def test_ndcg_uses_graded_relevance_with_linear_gain() -> None:
    rels = {"a": 2, "b": 1}
    dcg = 1 / math.log2(2) + 2 / math.log2(3)  # b first, then a
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(["b", "a"], rels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b"], rels, 10) == pytest.approx(1.0)
    assert ndcg_at(["b", "a"], rels, 10) < ndcg_at(["a", "b"], rels, 10)


def test_ndcg_ignores_documents_judged_zero() -> None:
    assert ndcg_at(["z", "a"], {"z": 0, "a": 1}, 10) == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize("rels", [{}, {"a": 0, "b": 0}])
def test_metrics_are_zero_when_no_document_is_relevant(rels: dict[str, int]) -> None:
    assert ndcg_at(["a", "b"], rels, 10) == 0.0
    assert recall_at(["a", "b"], rels, 10) == 0.0
    assert mrr_at(["a", "b"], rels, 10) == 0.0


def test_ndcg_counts_only_the_first_k_results() -> None:
    ranked = ["x", "y", "a"]
    assert ndcg_at(ranked, {"a": 1}, 2) == 0.0
    assert ndcg_at(ranked, {"a": 1}, 3) == pytest.approx(1 / math.log2(4))


def test_ndcg_ideal_ranking_is_cut_at_k_too() -> None:
    # three relevant documents, k=2: the two shown are the best possible top 2
    assert ndcg_at(["a", "b", "x"], {"a": 1, "b": 1, "c": 1}, 2) == pytest.approx(1.0)


def test_ndcg_of_an_empty_ranking_is_zero() -> None:
    assert ndcg_at([], {"a": 1}, 10) == 0.0


def test_recall_is_the_share_of_relevant_documents_found_in_the_top_k() -> None:
    rels = {"a": 1, "b": 2, "c": 0}
    assert recall_at(["a", "x", "b"], rels, 10) == pytest.approx(1.0)
    assert recall_at(["a", "x", "b"], rels, 2) == pytest.approx(0.5)
    assert recall_at(["x", "c"], rels, 10) == 0.0


def test_mrr_is_one_over_the_rank_of_the_first_relevant_document() -> None:
    rels = {"a": 1, "b": 2, "z": 0}
    assert mrr_at(["a", "b"], rels, 10) == 1.0
    assert mrr_at(["z", "x", "b", "a"], rels, 10) == pytest.approx(1 / 3)  # z is judged 0
    assert mrr_at(["x", "y", "a"], rels, 2) == 0.0  # beyond k
    assert mrr_at([], rels, 10) == 0.0


def test_query_metrics_by_hand_with_graded_relevance() -> None:
    # 12 documents ranked; relevant: a (grade 2) at rank 3, b (grade 1) at rank 11, c never found
    ranked = ["x1", "x2", "a"] + [f"y{i}" for i in range(7)] + ["b"]
    rels = {"a": 2, "b": 1, "c": 1}
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert query_metrics(ranked, rels) == pytest.approx(
        {
            "ndcg@10": (2 / math.log2(4)) / idcg,
            "recall@10": 1 / 3,
            "recall@100": 2 / 3,
            "mrr@10": 1 / 3,
        }
    )


def test_queries_without_a_relevant_document_are_left_out_and_counted() -> None:
    queries = [("q1", "one"), ("q2", "two"), ("q3", "three")]
    kept, skipped = scorable(queries, {"q1": {"a": 1}, "q2": {"a": 0}})
    assert kept == [("q1", "one")] and skipped == 2


def test_averages_are_over_the_scored_queries_rounded_to_four_places() -> None:
    score = ModeScore(
        per_query={
            "q1": {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0},
            "q2": {"ndcg@10": 0.0, "recall@10": 0.5, "recall@100": 1.0, "mrr@10": 1 / 3},
        }
    )
    assert score.averages() == {"ndcg@10": 0.5, "recall@10": 0.75, "recall@100": 1.0, "mrr@10": 0.6667}
    assert ModeScore().averages()["ndcg@10"] == 0.0


def test_per_query_shows_the_change_from_the_first_version_to_the_second() -> None:
    def run(**ndcg: float) -> dict[str, ModeScore]:
        figures = {
            q: {"ndcg@10": v, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0} for q, v in ndcg.items()
        }
        return {"hybrid": ModeScore(per_query=figures)}

    rows = per_query([("q1", "better"), ("q2", "worse")], {1: run(q1=0.5, q2=1.0), 2: run(q1=0.75, q2=0.25)})
    assert rows == [
        {
            "id": "q1",
            "text": "better",
            "ndcg@10": {"1": {"hybrid": 0.5}, "2": {"hybrid": 0.75}},
            "delta": {"hybrid": 0.25},
        },
        {
            "id": "q2",
            "text": "worse",
            "ndcg@10": {"1": {"hybrid": 1.0}, "2": {"hybrid": 0.25}},
            "delta": {"hybrid": -0.75},
        },
    ]
    single = per_query([("q1", "x")], {3: run(q1=0.5)})
    assert single == [{"id": "q1", "text": "x", "ndcg@10": {"3": {"hybrid": 0.5}}}]
