"""``lorebase eval``: retrieval quality of a KB on BEIR-format queries and qrels.

The figures are ``services/evaluations.py``'s (:func:`~lorebase.services.evaluations.score`),
the code path of ``POST /kbs/{id}/evaluations``: the same KB and labels give the same figures
either way. Results are per document (a document's rank is that of its best chunk); queries
without a relevant document are left out; evaluation queries are not written to the query log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorebase.adapters.embedders import embedder_info
from lorebase.assembly import assemble
from lorebase.cli.beir import load_corpus, load_qrels, load_queries
from lorebase.cli.common import console
from lorebase.cli.follow import follow
from lorebase.errors import InvalidInput
from lorebase.runtime import Runtime
from lorebase.services import drafts, kbs
from lorebase.services.auth import Principal
from lorebase.services.evaluation_requests import scorable
from lorebase.services.evaluations import score
from lorebase.services.search import searched_version


def build_from_corpus(rt: Runtime, p: Principal, name: str, corpus: str, model: str | None = None) -> str:
    records = load_corpus(corpus)
    config = {"embedding": {"model": model}} if model else None
    draft = drafts.create(rt, p, name=name, description=f"built from {Path(corpus).name}", config=config)
    drafts.add_text(rt, p, draft["id"], records)
    result = drafts.finalize(rt, p, draft["id"])
    console.print(f"building {name} from {len(records)} corpus documents ({model or rt.settings.embedder})")
    process = assemble(rt.settings, role="cli", concurrency=2, runtime=rt).start()
    try:
        state = follow(rt, p, result["pipeline_id"], interval=1.0)
    finally:
        process.stop()
    if state["status"] not in ("completed", "completed_with_errors"):
        raise InvalidInput(f"building the KB ended {state['status']}: {state.get('error')}")
    return str(result["kb_id"])


def run_eval(
    rt: Runtime,
    p: Principal,
    *,
    kb: str,
    queries: str,
    qrels: str,
    corpus: str | None,
    modes: list[str],
    limit: int | None,
    model: str | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """``model`` (an embedding model spec) is the one a KB built from ``corpus`` uses; an existing
    KB built with another model is an error, not a silent comparison of the wrong vectors."""
    if model:
        embedder_info(model)  # an unknown model fails before anything is built
    found = kbs.find_by_name(rt, p, kb)
    if found is None:
        if corpus is None:
            raise InvalidInput(f"no knowledge base {kb!r}; pass --corpus to build it from a BEIR corpus")
        kb_id = build_from_corpus(rt, p, kb, corpus, model)
    else:
        kb_id = found["id"]
        built_with = found["config"]["embedding"]["model"]
        if model and built_with != model:
            raise InvalidInput(
                f"knowledge base {kb!r} was built with {built_with}, not {model}: "
                "pass another --kb name to build one with this model"
            )
    judgements = load_qrels(qrels)
    texts = load_queries(queries)
    judged = [(q, texts[q]) for q in texts if q in judgements]
    labelled, _ = scorable(judged, judgements)
    labelled = labelled[: limit or None]
    if not labelled:
        raise InvalidInput("no query has a relevant document in the qrels file")
    report: dict[str, Any] = {"kb_id": kb_id, "queries": len(labelled), "modes": {}}
    with rt.db.read_session() as s:
        kb_row = kbs.load(s, p, kb_id)
        report["version"], config = searched_version(s, kb_row, version)
        report["model"] = config["embedding"]["model"]
        for mode, result in score(rt, s, kb_row, labelled, judgements, modes=modes, version=version).items():
            report["modes"][mode] = {
                **result.averages(),
                "ms_per_query": round(1000 * result.seconds / len(labelled), 2),
            }
    return report
