"""``--batch-api``: the Message Batches API (half price, results within 24 h).

Never pay twice: the batch id is handed to ``save_state`` right after the batch is
created (the core stores it in the run file), and a resumed run whose state holds an
id polls and fetches that batch instead of submitting again. Rows the stored batch does
not cover (the run was killed between two batches) go into a new batch.
"""

import time
from collections.abc import Callable
from typing import Any

from mia_core.errors import MiaError
from mia_core.progress import progress
from mia_core.types import Sampling, TextResult

RESULTS_CHUNK = 100  # results handed to the core (and flushed to the run file) at a time


def run_batch(backend: Any, items: list[tuple[int, str]], max_new_tokens: int, sampling: Sampling,
              state: dict[str, Any], save_state: Callable[[dict[str, Any]], None],
              on_results: Callable[[list[tuple[int, TextResult]]], None], quiet: bool = False) -> None:
    texts = dict(items)
    pending = [row for row, _ in items]
    if state.get("batch_id"):
        done = _collect(backend, state["batch_id"], texts, on_results, quiet)
        pending = [row for row in pending if row not in done]
    limit = backend.config.batch_max_requests
    while pending:
        chunk, pending = pending[:limit], pending[limit:]
        requests = [{"custom_id": str(row), "params": _params(backend, texts[row], max_new_tokens, sampling)}
                    for row in chunk]
        try:
            batch = backend.client.messages.batches.create(requests=requests)
        except Exception as exc:  # noqa: BLE001 - nothing was submitted: stop with the reason
            raise MiaError(f"creating the message batch failed: {backend.describe_error(exc)}") from None
        save_state({"batch_id": batch.id, "rows": len(chunk)})
        done = _collect(backend, batch.id, texts, on_results, quiet)
        missing = [row for row in chunk if row not in done]
        if missing:  # every request of a batch has a result line; a gap means a broken results file
            on_results([(row, TextResult(text="", error="no result for this request in the batch results"))
                        for row in missing])


def _params(backend: Any, text: str, max_new_tokens: int, sampling: Sampling) -> dict[str, Any]:
    return backend.render_request(text, max_new_tokens, sampling)


def _collect(backend: Any, batch_id: str, texts: dict[int, str],
             on_results: Callable[[list[tuple[int, TextResult]]], None], quiet: bool) -> set[int]:
    """Wait for batch ``batch_id`` to end, then hand over the results of rows in ``texts``."""
    client = backend.client
    interval = backend.config.poll_interval
    try:
        batch = client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
        with progress(total, desc=f"batch {batch_id}", unit="req", quiet=quiet) as bar:
            while True:
                c = batch.request_counts
                bar.n = c.succeeded + c.errored + c.canceled + c.expired
                bar.set_postfix_str(batch.processing_status, refresh=True)
                if batch.processing_status == "ended":
                    break
                time.sleep(interval)
                batch = client.messages.batches.retrieve(batch_id)
        seen: set[int] = set()
        chunk: list[tuple[int, TextResult]] = []
        for line in client.messages.batches.results(batch_id):
            try:
                row = int(line.custom_id)
            except ValueError:
                continue  # not one of ours
            if row not in texts or row in seen:
                continue  # stored before the run was interrupted
            seen.add(row)
            chunk.append((row, _result(backend, texts[row], line.result)))
            if len(chunk) >= RESULTS_CHUNK:
                on_results(chunk)
                chunk = []
        if chunk:
            on_results(chunk)
        return seen
    except MiaError:
        raise
    except Exception as exc:  # noqa: BLE001 - the batch id is saved: --resume picks it up again
        raise MiaError(f"message batch {batch_id}: {backend.describe_error(exc)}; "
                       "the batch id is saved in the run, --resume fetches it without resubmitting") from None


def _result(backend: Any, text: str, result: Any) -> TextResult:
    kind = getattr(result, "type", None)
    if kind == "succeeded":
        try:
            return backend.to_result(text, result.message, batch=True)
        except ValueError as exc:
            return TextResult(text="", error=str(exc))
    if kind == "errored":
        error = getattr(result.error, "error", None)
        detail = f"{getattr(error, 'type', 'error')}: {getattr(error, 'message', '')}" if error else "errored"
        return TextResult(text="", error=backend.scrub(f"batch request errored: {detail}"))
    return TextResult(text="", error=f"batch request {kind or 'failed'} (not processed, not billed)")
