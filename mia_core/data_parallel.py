"""Data parallelism on Ray: ``data_parallel_size`` replicas of one model, one per Ray actor.

A backend plugin whose factory is asked for ``data_parallel_size`` > 1 returns
:func:`replicate`'s backend instead of its own: every replica is a Ray actor that builds the
plugin's single-replica backend through the registry (the same name, the same options, with
``data_parallel_size=1``), asking Ray for the resources its :class:`Placement` names (GPUs, CPU
cores) and starting with the environment it gives. Each ``generate``/``score`` call is cut into
one run of consecutive rows per live replica (balanced by length) and the outputs are gathered in
the order given, so a caller cannot tell a replicated backend from one engine: greedy rows are the
same rows, and a seeded sampling call gives each part the call's seed moved on by the part's first
row (vLLM, which seeds each row from seed + its position, samples the same tokens; the HF backend
seeds each call, so its sampled rows depend on data_parallel_size, reproducibly).

Where the actors run: the Ray cluster at ``RAY_ADDRESS`` (``mia --ray-address``: several nodes
started with ``ray start``, docs/scale.md), else a local cluster this process starts and owns.

Failures, in one line each: a replica that dies mid-call (killed, out of host memory, its node
lost) has its part retried once on another live replica and later calls use the ones left; a
part that fails twice, or no replica left, is a ``MiaError``. Errors a replica raises on purpose
(``MiaError``, ``BackendOutOfMemory``: the caller halves its batch) reach the caller as themselves.
Ctrl-C kills the actors at once; so does exit. When ``mia`` itself is SIGKILLed, Ray's own
fate-sharing ends the actors: an actor dies with the driver that owns it, and a local cluster's
processes die with the process that started it (tested in tests/test_ray_replicas.py).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mia_core import registry
from mia_core.errors import MiaError
from mia_core.progress import note
from mia_core.types import capabilities, scores_sampling

CONNECT_TIMEOUT_S = 5.0
POLL_S = 0.5  # how often a waiting call asks the replicas how far they are (the progress bar)
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2  # outputs are token ids and scores: Ray's default (30 % of RAM) is waste
RAY_MISSING = ("data_parallel_size > 1 runs the replicas on Ray, which is not installed in this environment: "
               "pip install 'ray==2.60.0' (or bash install.sh --dev; docs/scale.md)")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one replica runs: the Ray resources its actor asks for, and environment variables it
    sets before its backend is built (thread counts, core binding)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def contiguous_parts(lengths: Sequence[int], parts: int) -> list[range]:
    """``range(len(lengths))`` cut into ``parts`` consecutive runs of near-equal total length (a part
    may be empty). Consecutive, so that row i of a call keeps its position: a backend that seeds
    each row from the call's seed + its position (vLLM) samples the same tokens split or not."""
    weights = [max(int(n), 1) for n in lengths]
    total, cuts, running = sum(weights), [0], 0
    for index, weight in enumerate(weights):
        running += weight
        while len(cuts) < parts and running * parts >= total * len(cuts):
            cuts.append(index + 1)
    cuts += [len(weights)] * (parts + 1 - len(cuts))
    return [range(cuts[k], cuts[k + 1]) for k in range(parts)]


def replica_count(options: dict[str, Any]) -> int:
    """The ``data_parallel_size`` option, checked (absent or None: 1)."""
    value = options.get("data_parallel_size")
    count = 1 if value is None else value
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise MiaError(f"option data_parallel_size must be an integer >= 1 (the number of model replicas), "
                       f"got {value!r}")
    return count


def cpu_placements(count: int, threads: int | None = None) -> list[Placement]:
    """``count`` CPU replicas sharing this machine's cores (or ``threads`` each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = threads or max(1, cores // count)
    return [Placement(num_cpus=share, env={"OMP_NUM_THREADS": str(share)}) for _ in range(count)]


# --- the actor (runs in a Ray worker process) -------------------------------------------------
class _Replica:
    """One replica: the plugin's own single-replica backend, built inside the actor."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)  # before the backend imports torch or vLLM
        self.backend: Any = None
        self.done = (0.0, 0)
        # Two threads (max_concurrency=2) so that progress() answers during a call; calls themselves
        # run one at a time (a part left running by a call that failed elsewhere finishes first).
        self.one_call = threading.Lock()

    def start(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        import ray

        self.backend = registry.backends.create(name, options)
        if hasattr(self.backend, "on_rows_done"):
            self.backend.on_rows_done = self._advance
        return {"describe": self.backend.describe() if hasattr(self.backend, "describe") else {},
                "capabilities": sorted(capabilities(self.backend)), "scores_sampling": scores_sampling(self.backend),
                "pid": os.getpid(), "node": ray.util.get_node_ip_address()}

    def _advance(self, rows: float, tokens: int) -> None:
        self.done = (self.done[0] + rows, self.done[1] + tokens)

    def progress(self) -> tuple[float, int]:
        return self.done

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self.one_call:
            self.done = (0.0, 0)
            return getattr(self.backend, method)(*args, **kwargs)


# --- the driver's side -------------------------------------------------------------------------
def _connect() -> str:
    """Join the cluster at ``RAY_ADDRESS``, or start a local one; the address, as recorded."""
    address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        _check_reachable(address)
        _send_token_if_any()  # before Ray reads its configuration, on import
    try:
        import ray
    except ImportError as exc:
        raise MiaError(RAY_MISSING) from exc
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                                      configure_logging=True)
        if address is None:
            kwargs["object_store_memory"] = LOCAL_OBJECT_STORE_BYTES
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MiaError(f"cannot connect to the Ray cluster at {address!r}: {_first_line(exc)} "
                           f"(start one with `ray start --head`, docs/scale.md)" if address else
                           f"cannot start a local Ray cluster: {_first_line(exc)}") from exc
        _quiet_ray_error_printer()
    return address or "local"


def _check_reachable(address: str) -> None:
    """Ray waits minutes on an address nobody answers (retrying, in C++ warnings): ask once, briefly."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", ray://: Ray's own lookup, which fails fast
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise MiaError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start its head with "
                       f"`ray start --head --port={port}` or give the address it printed (docs/scale.md)") from exc


def _send_token_if_any() -> None:
    """`ray start --head` turns on token authentication when this user has a Ray token (it makes one
    by default), but a driver joining it sends none unless told to (then retries for minutes): do as
    `ray start` does, and send the token when there is one."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(token_file):
        os.environ["RAY_AUTH_MODE"] = "token"


def _quiet_ray_error_printer() -> None:
    """Ray prints its raylet's error reports (a worker that died, with a paragraph of advice) on the
    driver's stdout, which is mia's results; mia reports such a failure itself, in one line."""
    from ray._private import worker

    if hasattr(worker, "print_to_stdstream"):
        worker.print_to_stdstream = lambda data, ignore_prefix: None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_resources(placements: Sequence[Placement], address: str) -> None:
    """A replica Ray cannot place would wait forever: refuse in one line instead (what other actors
    hold counts: a cluster's free resources, not its total)."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    for key, label in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
        need = sum(getattr(p, key) for p in placements)
        if need > free.get(label, 0.0) + 1e-9:
            where = "this machine's local Ray cluster" if address == "local" else f"the Ray cluster at {address}"
            held = total.get(label, 0.0) - free.get(label, 0.0)
            busy = f" ({held:g} held by other actors)" if held > 1e-9 else ""
            raise MiaError(f"data_parallel_size={len(placements)} needs {need:g} {label}s in all "
                           f"({getattr(placements[0], key):g} per replica), {where} has {free.get(label, 0.0):g} "
                           f"free of {total.get(label, 0.0):g}{busy}")


class RayReplicas:
    """A backend over ``data_parallel_size`` Ray actors (see the module docstring). The subclass
    :func:`replicate` returns has exactly the capability methods the replicas have."""

    def __init__(self, name: str, options: dict[str, Any], tokenizer: Any, placements: Sequence[Placement]) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.on_rows_done: Callable[[float, int], None] | None = None
        self.address = _connect()  # first: it sets what Ray reads on import
        import ray

        _check_resources(placements, self.address)
        actor = ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)(_Replica)
        self.actors = [actor.options(num_cpus=p.num_cpus, num_gpus=p.num_gpus).remote(p.env) for p in placements]
        self.alive = list(range(len(self.actors)))
        single = {**options, "data_parallel_size": 1}
        try:
            self.started = self._gather([a.start.remote(name, single) for a in self.actors], "start")
        except BaseException:
            self.close()
            raise
        self._describe = dict(self.started[0]["describe"])

    # -- what the core asks ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {**self._describe, "data_parallel_size": len(self.actors), "data_parallel": "ray",
                "ray_address": self.address, "replica_nodes": sorted({s["node"] for s in self.started})}

    def close(self) -> None:
        """Kill the actors now (a local cluster stops when this process exits)."""
        import ray

        for actor in getattr(self, "actors", []):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead, or the cluster is gone: nothing to stop
                pass
        self.alive = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit Ray may be gone already
            pass

    # -- one call split across the replicas ----------------------------------------------------
    def _replica_label(self, replica: int) -> str:
        s = self.started[replica] if replica < len(getattr(self, "started", [])) else {}
        where = f", pid {s['pid']} on {s['node']}" if s else ""
        return f"replica {replica + 1} of {len(self.actors)} of {self.name} (Ray actor{where})"

    def _gather(self, refs: list[Any], what: str) -> list[Any]:
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:  # raised by the backend itself
            self.close()
            raise _as_error(exc) from exc
        except ray.exceptions.RayError as exc:  # its process is gone: killed, out of host memory, node lost
            self.close()
            raise MiaError(f"a replica of {self.name} died during {what}: {_first_line(exc)}") from exc

    def _split_call(self, method: str, rows: Sequence[Any], lengths: Sequence[int],
                    make_args: Callable[[range], tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        """``method`` over ``rows``: one part per live replica, results in the order of ``rows``."""
        if not self.alive:
            raise MiaError(f"{self.name}: no replica is left (each died or was stopped)")
        if not rows:
            return []
        parts = [p for p in contiguous_parts(lengths, len(self.alive)) if len(p)]
        try:
            return _Call(self, method, parts, make_args).run(len(rows))
        except KeyboardInterrupt:
            self.close()  # Ctrl-C: no replica keeps computing what nobody will read
            raise


class _Call:
    """One split call in flight: its parts, the replica each runs on, and the progress reported."""

    def __init__(self, owner: RayReplicas, method: str, parts: list[range],
                 make_args: Callable[[range], tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        self.owner, self.method, self.parts, self.make_args = owner, method, parts, make_args
        self.tries = [0] * len(parts)
        self.reported = [(0.0, 0)] * len(parts)
        self.running: dict[Any, tuple[int, int]] = {}  # ref -> (part, replica)

    def submit(self, part: int, replica: int) -> None:
        args, kwargs = self.make_args(self.parts[part])
        self.tries[part] += 1
        self.reported[part] = (0.0, 0) if self.tries[part] == 1 else self.reported[part]
        ref = self.owner.actors[replica].call.remote(self.method, args, kwargs)
        self.running[ref] = (part, replica)

    def run(self, total: int) -> list[Any]:
        import ray

        outputs: list[Any] = [None] * total
        for part, replica in enumerate(self.owner.alive[:len(self.parts)]):
            self.submit(part, replica)
        while self.running:
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                part, replica = self.running.pop(ref)
                result = self._result(ref, part, replica)
                if result is not None:
                    for index, output in zip(self.parts[part], result, strict=True):
                        outputs[index] = output
                    self._report_rest(part)
            self._report_progress()
        return outputs

    def _result(self, ref: Any, part: int, replica: int) -> list[Any] | None:
        """The part's outputs; None when its replica died and the part went to another one."""
        import ray

        owner = self.owner
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # raised by the backend itself
            raise _as_error(exc) from exc
        except ray.exceptions.RayError as exc:  # its process is gone: killed, out of host memory, node lost
            self._lost(part, replica, exc)
            return None
        if len(result) != len(self.parts[part]):
            raise MiaError(f"{owner._replica_label(replica)} returned {len(result)} outputs for "
                           f"{len(self.parts[part])} rows")
        return result

    def _lost(self, part: int, replica: int, exc: Exception) -> None:
        """``replica`` is gone: its part runs again on a live replica, once; else one error."""
        owner = self.owner
        if replica in owner.alive:
            owner.alive.remove(replica)
        label = owner._replica_label(replica)
        busy = {r for _, r in self.running.values()}
        spare = [r for r in owner.alive if r not in busy] or owner.alive
        if self.tries[part] >= 2 or not spare:
            owner.close()
            raise MiaError(f"{label} died ({_first_line(exc)}); "
                           + ("its rows had been retried once already" if self.tries[part] >= 2
                              else "no other replica was left") + ": the replicas were stopped") from exc
        note(f"mia: {label} died ({_first_line(exc)}); its {len(self.parts[part])} rows run again on "
             f"replica {spare[0] + 1}, and later calls use the {len(owner.alive)} replica(s) left")
        self.submit(part, spare[0])

    def _report(self, part: int, done: tuple[float, int]) -> None:
        """Move the bar by what ``part`` did beyond what it reported before (a retried part's
        second run does not count its rows twice)."""
        before = self.reported[part]
        rows, tokens = max(done[0] - before[0], 0.0), max(done[1] - before[1], 0)
        if rows or tokens:
            self.reported[part] = (max(done[0], before[0]), max(done[1], before[1]))
            if self.owner.on_rows_done is not None:
                self.owner.on_rows_done(rows, tokens)

    def _report_rest(self, part: int) -> None:
        rows = float(len(self.parts[part]))
        self._report(part, (rows, self.reported[part][1]))

    def _report_progress(self) -> None:
        import ray

        if self.owner.on_rows_done is None or not self.running:
            return
        asked = {self.owner.actors[replica].progress.remote(): part for part, replica in self.running.values()}
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=POLL_S)
        for ref in ready:
            try:
                self._report(asked[ref], ray.get(ref))
            except ray.exceptions.RayError:
                pass  # a replica dying now is handled where its call's result is read


def _as_error(exc: Any) -> MiaError:
    """What a replica raised, for the caller: a ``MiaError`` (``BackendOutOfMemory`` included) as
    itself, anything else as one line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, MiaError):
        return cause
    return MiaError(f"a replica failed: {_first_line(cause) if cause is not None else _first_line(exc)}")


def _seeded_from(sampling: Any, part: range) -> Any:
    """The call's sampling for the part starting at row ``part.start``: its seed moved on by that
    many rows (row i of the call is row i - start of the part)."""
    if getattr(sampling, "seed", None) is None or part.start == 0:
        return sampling
    return dataclasses.replace(sampling, seed=int(sampling.seed) + part.start)


class _Generates:
    def generate(self: Any, prefixes: Sequence[Sequence[int]], max_new_tokens: int, sampling: Any = None) -> list[Any]:
        """``generate`` of the replicas, each on its share of ``prefixes``."""
        lengths = [len(p) + max_new_tokens for p in prefixes]
        return self._split_call("generate", prefixes, lengths, lambda part: (
            ([list(prefixes[i]) for i in part], max_new_tokens, _seeded_from(sampling, part)), {}))


class _GeneratesText:
    def generate_text(self: Any, prompts: Sequence[str], max_new_tokens: int, sampling: Any = None) -> list[Any]:
        """``generate_text`` of the replicas, each on its share of ``prompts``."""
        lengths = [len(p) // 4 + max_new_tokens for p in prompts]  # ~4 characters a token: only to balance
        return self._split_call("generate_text", prompts, lengths, lambda part: (
            ([prompts[i] for i in part], max_new_tokens, _seeded_from(sampling, part)), {}))


def _start_of(start: int | Sequence[int], part: range) -> int | list[int]:
    return start if isinstance(start, int) else [int(start[i]) for i in part]


class _Scores:
    def score(self: Any, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True) -> list[Any]:
        """``score`` of the replicas, each on its share of ``sequences``."""
        return self._split_call("score", sequences, [len(s) for s in sequences], lambda part: (
            ([list(sequences[i]) for i in part], _start_of(start, part)), {"distribution": distribution}))


class _ScoresSampled:
    def score(self: Any, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True, sampling: Any = None) -> list[Any]:
        """``score`` of the replicas (with the sampled log-probabilities), each on its share of ``sequences``."""
        extra = {} if sampling is None else {"sampling": sampling}
        return self._split_call("score", sequences, [len(s) for s in sequences], lambda part: (
            ([list(sequences[i]) for i in part], _start_of(start, part)), {"distribution": distribution, **extra}))


def replicate(name: str, options: dict[str, Any], *, tokenizer: Any,
              placements: Sequence[Placement]) -> RayReplicas:
    """``len(placements)`` replicas of the backend ``name`` with ``options``, one Ray actor each,
    as one backend with the capabilities the replicas have."""
    if len(placements) < 2:
        raise MiaError("data parallelism needs at least 2 replicas")
    probe = RayReplicas(name, options, tokenizer, placements)
    first = probe.started[0]
    mixins: list[type] = []
    if "generate" in first["capabilities"]:
        mixins.append(_Generates)
    if "generate_text" in first["capabilities"]:
        mixins.append(_GeneratesText)
    if "score" in first["capabilities"]:
        mixins.append(_ScoresSampled if first["scores_sampling"] else _Scores)
    probe.__class__ = type("ReplicatedBackend", (*mixins, RayReplicas), {})
    return probe
