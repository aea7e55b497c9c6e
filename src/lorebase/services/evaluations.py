"""Retrieval evaluation: labelled queries run against a KB's versions and search modes, as a job.

One home for the metrics and the way a KB is scored: ``POST /kbs/{id}/evaluations`` (the
``evaluate`` job, :class:`RunEvaluation`), ``lorebase eval`` (``cli/evaluate.py``) and a new
version's ``if_better`` activation all call :func:`score`, so they give the same figures on the
same KB and labels.

Evaluation is per document: :data:`CHUNK_DEPTH` chunks are retrieved per query, a document's
rank is that of its best chunk, and a chunk maps to its document's ``external_id`` (its id when
it has none), the key of the qrels. The metrics are the standard trec_eval definitions, a dozen
lines each rather than a compiled evaluation package: nDCG with linear gain and log2 discount,
recall over judged-relevant documents, reciprocal rank of the first relevant document.

A query with no relevant document (no grade above 0, or no judgements at all) cannot be scored:
every metric would be 0 whatever the ranking. It is left out of the averages and counted in
``skipped_queries``. Evaluation queries never go to the query log (``retrieve``, not ``search``).

Labels from feedback (``from_feedback: true``) are taken from the KB's query log when the
evaluation is created (``feedback_labels``, ``services/feedback_labels.py``) and stored with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lorebase.db.models import Chunk, Document, Evaluation, KnowledgeBase, utcnow
from lorebase.db.states import EVALUATION_FINAL, EvaluationStatus
from lorebase.errors import Conflict, Interrupted, InvalidInput, NotFound, PermanentError
from lorebase.services.auth import Principal
from lorebase.services.evaluation_requests import validate
from lorebase.services.kbs import load as load_kb
from lorebase.services.search import MODES, Mode, query_vectors, retrieve, searched_version
from lorebase.tasks import evaluate as evaluate_task

if TYPE_CHECKING:
    from lorebase.jobs.context import JobContext
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.evaluations")

CHUNK_DEPTH = 300  # chunks fetched per query, enough for 100 distinct documents
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
#: most ``per_query`` rows kept (beyond, those that changed most between two versions)
PER_QUERY_LIMIT = 1_000
#: query texts are cut to this many characters in ``per_query``
PER_QUERY_TEXT = 300


# -- metrics -------------------------------------------------------------------------------------


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    """nDCG@k with linear gain (the grade) and log2 discount; 0 when nothing is relevant."""
    dcg = sum(rels.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    """Share of the relevant (grade > 0) documents found in the first k; 0 when none is relevant."""
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant (grade > 0) document in the first k, else 0."""
    for i, doc in enumerate(ranked[:k]):
        if rels.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def query_metrics(ranked: list[str], rels: dict[str, int]) -> dict[str, float]:
    """The figures of one query, keyed as :data:`METRICS`."""
    return {
        "ndcg@10": ndcg_at(ranked, rels, 10),
        "recall@10": recall_at(ranked, rels, 10),
        "recall@100": recall_at(ranked, rels, 100),
        "mrr@10": mrr_at(ranked, rels, 10),
    }


# -- scoring (shared by the job, lorebase eval and activation) -----------------------------------


@dataclass(slots=True)
class ModeScore:
    """One mode on one version: each scored query's figures, and the time the searches took."""

    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def averages(self) -> dict[str, float]:
        n = len(self.per_query)
        return {m: round(sum(q[m] for q in self.per_query.values()) / n, 4) if n else 0.0 for m in METRICS}


def document_keys(s: Session, kb_id: str, version: int) -> dict[int, str]:
    """chunk pk → its document's key (``external_id``, else the document's id) for one version."""
    rows = s.execute(
        select(Chunk.pk, Document.external_id, Document.id)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.kb_id == kb_id, Chunk.version == version)
    ).all()
    return {pk: ext if ext is not None else doc_id for pk, ext, doc_id in rows}


def score(
    runtime: Runtime,
    s: Session,
    kb: KnowledgeBase,
    queries: list[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    *,
    modes: Iterable[str],
    version: int | None = None,
    between: Callable[[], None] | None = None,
) -> dict[str, ModeScore]:
    """Each mode's figures on ``version`` (None: the live one) for ``queries`` ((id, text), each
    with a relevant document in ``qrels``), read in ``s``. ``between`` is called every 50
    queries (a job's control check)."""
    served, config = searched_version(s, kb, version)
    keys = document_keys(s, kb.id, served)
    checked = [_mode(mode) for mode in modes]
    vectors: np.ndarray | None = None
    out: dict[str, ModeScore] = {}
    done = 0
    for mode in checked:
        result = out[mode] = ModeScore()
        started = time.perf_counter()
        if vectors is None and mode != "keyword":  # embedded once, in batches, for every mode
            vectors = query_vectors(runtime, config, [text for _, text in queries])
        for n, (qid, text) in enumerate(queries):
            vector = None if vectors is None else vectors[n]
            chunks = retrieve(
                runtime, s, kb, text, mode=mode, top_k=CHUNK_DEPTH, version=served, vector=vector
            )
            ranked = list(dict.fromkeys(keys[r.pk] for r in chunks if r.pk in keys))
            result.per_query[qid] = query_metrics(ranked, qrels[qid])
            done += 1
            if between is not None and done % 50 == 0:
                between()
        result.seconds = time.perf_counter() - started
    return out


def _mode(mode: str) -> Mode:
    if mode not in MODES:
        raise InvalidInput(f"unknown mode {mode!r}", details={"modes": list(MODES)})
    return mode  # type: ignore[return-value]


# -- lifecycle -----------------------------------------------------------------------------------


def new_evaluation(
    s: Session,
    runtime: Runtime,
    kb: KnowledgeBase,
    request: dict[str, Any],
    *,
    versions: list[int] | None = None,
    pipeline_id: str | None = None,
) -> Evaluation:
    """Validate ``request`` (the API's body) and insert the evaluation, ``queued``, in the
    caller's transaction; no job yet (:func:`start`). ``versions`` overrides the request's;
    with neither, the live version when the job starts is scored. With a ``pipeline_id``, a
    version still ``building`` is accepted (the job checks again when it runs). ``from_feedback``
    reads the query log as committed: a caller that wants this process's last second of
    searches flushes ``runtime.query_log`` first (:func:`create` does)."""
    if versions is not None:
        request = {**request, "versions": versions}
    stored = validate(s, kb, request, accept_building=pipeline_id is not None)
    evaluation = Evaluation(
        kb_id=kb.id,
        workspace_id=kb.workspace_id,
        status=EvaluationStatus.QUEUED,
        request=stored,
        pipeline_id=pipeline_id,
    )
    s.add(evaluation)
    s.flush()
    return evaluation


def start(s: Session, runtime: Runtime, evaluation: Evaluation) -> None:
    """Queue the evaluation's job in the caller's transaction (its pipeline, if any, waits for it)."""
    evaluate_task.enqueue(s, runtime, evaluation)


def create(runtime: Runtime, p: Principal, kb_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /kbs/{id}/evaluations``: validate, insert and queue in one transaction."""
    if body.get("from_feedback"):
        runtime.query_log.flush()  # this process's searches of the last second count too
    with runtime.db.session() as s:
        kb = load_kb(s, p, kb_id)
        evaluation = new_evaluation(s, runtime, kb, body)
        start(s, runtime, evaluation)
        out = {"evaluation_id": evaluation.id, "status": evaluation.status}
    runtime.queue.notify()
    return out


def get(runtime: Runtime, p: Principal, evaluation_id: str) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        evaluation = s.execute(
            select(Evaluation).where(
                Evaluation.id == evaluation_id, Evaluation.workspace_id == p.workspace_id
            )
        ).scalar_one_or_none()
        if evaluation is None:
            raise NotFound(f"evaluation {evaluation_id} not found")
        return to_dict(evaluation)


def to_dict(evaluation: Evaluation) -> dict[str, Any]:
    request = evaluation.request or {}
    out = {
        "id": evaluation.id,
        "kb_id": evaluation.kb_id,
        "status": evaluation.status,
        "versions": request.get("versions"),
        "modes": request.get("modes"),
        "from_feedback": request.get("from_feedback", False),
        "queries": len(request.get("queries") or []),
        "skipped_queries": request.get("skipped_queries", 0),
        "results": evaluation.results or {},
        "per_query": evaluation.per_query or [],
        # more than PER_QUERY_LIMIT queries: only those that changed (or scored) most are listed
        "per_query_truncated": len(evaluation.per_query or []) < len(request.get("queries") or [])
        and evaluation.status == EvaluationStatus.COMPLETED,
        "error": evaluation.error,
        "pipeline_id": evaluation.pipeline_id,
        "created_at": evaluation.created_at,
        "started_at": evaluation.started_at,
        "finished_at": evaluation.finished_at,
    }
    if "feedback" in request:
        out["feedback"] = request["feedback"]
    return out


# -- the job -------------------------------------------------------------------------------------


class RunEvaluation:
    """Job handler of ``evaluate``: ``running``, every (version, mode) scored, then results,
    per-query figures and ``completed`` in one transaction."""

    def run(self, ctx: JobContext[Runtime]) -> None:
        runtime = ctx.runtime
        evaluation_id = str(ctx.job.payload["evaluation_id"])
        with ctx.transaction() as s:
            evaluation = s.get(Evaluation, evaluation_id)
            if evaluation is None or evaluation.status in EVALUATION_FINAL:
                return  # deleted with its KB, or already done by an earlier attempt
            evaluation.status = EvaluationStatus.RUNNING
            evaluation.started_at = evaluation.started_at or utcnow()
            request = dict(evaluation.request)
            kb_id = evaluation.kb_id
        queries = [(q["id"], q["text"]) for q in request["queries"]]
        qrels: dict[str, dict[str, int]] = request["qrels"]
        scores: dict[int, dict[str, ModeScore]] = {}
        try:
            with runtime.db.read_session() as s:
                versions = request.get("versions") or [_kb(s, kb_id).version]
            for version in versions:
                with runtime.db.read_session() as s:
                    kb = _kb(s, kb_id)
                    scores[version] = score(
                        runtime,
                        s,
                        kb,
                        queries,
                        qrels,
                        modes=request["modes"],
                        version=version,
                        between=lambda: ctx.check_control(resumable=False),
                    )
        except (NotFound, Conflict, InvalidInput) as exc:
            raise PermanentError(exc.message) from exc
        except Interrupted as exc:
            if exc.reason == "cancelled":
                with ctx.transaction() as s:
                    _fail(s, evaluation_id, "cancelled with its pipeline")
            raise
        with ctx.transaction() as s:
            evaluation = s.get(Evaluation, evaluation_id)
            if evaluation is None:
                return
            evaluation.request = {**request, "versions": versions}
            evaluation.results = {
                str(v): {mode: m.averages() for mode, m in by_mode.items()} for v, by_mode in scores.items()
            }
            evaluation.per_query = per_query(queries, scores)
            evaluation.status = EvaluationStatus.COMPLETED
            evaluation.error = None
            evaluation.finished_at = utcnow()

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        _fail(session, str(ctx.job.payload["evaluation_id"]), message)


def _kb(s: Session, kb_id: str) -> KnowledgeBase:
    kb = s.get(KnowledgeBase, kb_id)
    if kb is None:
        raise NotFound("the knowledge base was deleted")
    return kb


def _fail(s: Session, evaluation_id: str, message: str) -> None:
    s.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status.not_in(list(EVALUATION_FINAL)))
        .values(status=EvaluationStatus.FAILED, error=message, finished_at=utcnow())
    )


def per_query(
    queries: list[tuple[str, str]], scores: dict[int, dict[str, ModeScore]]
) -> list[dict[str, Any]]:
    """Each query's nDCG@10 per version and mode; with two versions, the change per mode (second
    minus first), so a user sees which queries got better or worse. Beyond
    :data:`PER_QUERY_LIMIT` queries, those that changed most (or, with one version, scored
    lowest) are kept, in query order."""
    versions = list(scores)
    rows: list[dict[str, Any]] = []
    for qid, text in queries:
        ndcg = {
            str(v): {mode: round(m.per_query[qid]["ndcg@10"], 4) for mode, m in scores[v].items()}
            for v in versions
        }
        row: dict[str, Any] = {"id": qid, "text": text[:PER_QUERY_TEXT], "ndcg@10": ndcg}
        if len(versions) == 2:
            first, second = ndcg[str(versions[0])], ndcg[str(versions[1])]
            row["delta"] = {mode: round(second[mode] - first[mode], 4) for mode in first}
        rows.append(row)
    if len(rows) <= PER_QUERY_LIMIT:
        return rows

    def weight(row: dict[str, Any]) -> float:
        if "delta" in row:
            return -max(abs(d) for d in row["delta"].values())
        return min(x for by_mode in row["ndcg@10"].values() for x in by_mode.values())

    keep = {id(r) for r in sorted(rows, key=weight)[:PER_QUERY_LIMIT]}
    return [r for r in rows if id(r) in keep]
