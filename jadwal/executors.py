"""Where a unit of work runs: a local process pool (default) or Ray tasks / actors.

The stages own their units of work (``probe_batch`` of ``manifests``, ``_write_task`` of ``shards``,
the per-shard embedding loop of ``pipelines.embed``); an executor only decides where each unit runs.
Both executors call the same function on the same arguments, so the outputs are the same; order is
the caller's business (``map_ordered`` returns results in input order; ``map_unordered`` hands them to
a callback as they complete, for stages whose results are keyed, e.g. by shard id).

``get_executor("local" | "ray", address=None, num_cpus=None)``:

* ``local`` — :class:`LocalExecutor`: ``concurrent.futures`` process pool (``forkserver``), inline
  when one worker is asked for.
* ``ray`` — :class:`RayExecutor`: ``ray.remote`` tasks with ``max_retries`` (a task whose worker
  process dies is re-run by Ray).  ``address=None`` joins the Ray instance already initialized in this
  process, else ``$RAY_ADDRESS``, else starts a local one (``num_cpus`` CPUs, no dashboard, small
  object store); ``address="auto"`` or ``"ray://host:10001"`` joins an existing cluster.  A Ray
  instance the executor started is shut down by :meth:`close`.

Fault injection (tests, drills): ``JADWAL_FAULT_KILL_ONCE=<marker>[::<substring>[::<point>]]`` makes
the first task whose label contains ``<substring>`` (every task when empty) kill its worker process
with ``os._exit(1)`` after creating the file ``<marker>``; the retry sees the marker and runs normally.
``<point>`` is ``start`` (default: before the unit runs) or a named point inside a unit, reached
through :func:`fault_point` (e.g. ``tmp-written``: a shard's temp tar is written, not yet renamed).
The variable is read in the driver at submission, so it reaches workers on any executor.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Iterable

EXECUTORS = ("local", "ray")
FAULT_ENV = "JADWAL_FAULT_KILL_ONCE"
DEFAULT_RETRIES = 3
DEFAULT_OBJECT_STORE = 300 * 1024**2


class ExecutorError(RuntimeError):
    """Bad executor arguments, or Ray asked for but not installed."""


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def _fault_spec() -> str | None:
    return os.environ.get(FAULT_ENV) or None


_CURRENT: tuple[str | None, str] = (None, "")  # (fault spec, label) of the unit running in this process


def maybe_inject_fault(spec: str | None, label: str, point: str = "start") -> None:
    """Worker side of the fault-injection hook (see the module doc)."""
    if not spec:
        return
    marker, _, rest = spec.partition("::")
    match, _, where = rest.partition("::")
    if (match and match not in label) or (where or "start") != point:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return  # the fault already happened once: this is the retry
    os.write(fd, f"killed pid {os.getpid()} running {label}\n".encode())
    os.close(fd)
    os._exit(1)


def fault_point(point: str) -> None:
    """A named fault-injection point inside a unit of work (no-op unless a fault targets it)."""
    spec, label = _CURRENT
    if spec:
        maybe_inject_fault(spec, label, point)


def run_unit(fn: Callable, item: Any, label: str, fault: str | None):
    """What runs on a worker, for both executors: the fault hook, then ``fn(item)``."""
    global _CURRENT
    maybe_inject_fault(fault, label)
    _CURRENT = (fault, label)
    try:
        return fn(item)
    finally:
        _CURRENT = (None, "")


class _Ref:
    """A Ray ObjectRef with a ``Future``-like ``result()``."""

    def __init__(self, ref):
        self.ref = ref

    def result(self):
        import ray

        return ray.get(self.ref)


class Done:
    """A finished 'future': work that ran in this process."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class PoolOwner:
    """``close()`` and the context manager for an object holding a lazily started process pool
    (``self._pool``): cancels what has not started, waits for the rest."""

    _pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(PoolOwner):
    """A process pool on this machine (``num_cpus`` workers; ``1`` = inline, in this process)."""

    kind = "local"

    def __init__(self, num_cpus: int | None = None, *, preload: tuple[str, ...] = ()):
        self.num_cpus = max(1, int(num_cpus or os.cpu_count() or 1))
        self.preload = preload
        self._pool = None

    @property
    def parallelism(self) -> int:
        return self.num_cpus

    def _get_pool(self, fn):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload([__name__, fn.__module__, *self.preload])
            self._pool = ProcessPoolExecutor(max_workers=self.num_cpus, mp_context=ctx)
        return self._pool

    def submit(self, fn: Callable, item: Any, *, label: str = "", retries: int = 0) -> Future | Done:
        """One unit; ``retries`` is accepted for symmetry (a local worker's death fails the stage: rerun
        it, complete units are kept)."""
        if self.num_cpus == 1:
            return Done(run_unit(fn, item, label, _fault_spec()))
        return self._get_pool(fn).submit(run_unit, fn, item, label, _fault_spec())

    def map_unordered(self, fn, items: Iterable, on_result: Callable, *, label=str, retries: int = 0,
                      inflight: int | None = None) -> None:
        it = iter(items)
        head = list(itertools.islice(it, 2))
        if self.num_cpus == 1 or len(head) < 2:
            fault = _fault_spec()
            for x in itertools.chain(head, it):
                on_result(run_unit(fn, x, label(x), fault))
            return
        _drive(lambda x: self.submit(fn, x, label=label(x)), itertools.chain(head, it), on_result,
               inflight or 3 * self.num_cpus, _wait_futures)

    def map_ordered(self, fn, items: Iterable, *, label=str, retries: int = 0) -> list:
        futs = [self.submit(fn, x, label=label(x), retries=retries) for x in items]
        return [f.result() for f in futs]


class RayExecutor:
    """Ray tasks (``ray.remote``), retried by Ray when their worker dies."""

    kind = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, *,
                 object_store_memory: int | None = DEFAULT_OBJECT_STORE, task_cpus: float = 1.0):
        if not ray_available():
            raise ExecutorError("--executor ray needs Ray: pip install 'jadwal[ray]' (ray[data])")
        import ray

        self.started = False
        if not ray.is_initialized():
            kw: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=object_store_memory, **kw)
                self.started = True
        self.task_cpus = task_cpus
        self._remote = ray.remote(run_unit)

    @property
    def parallelism(self) -> int:
        import ray

        return max(1, int(ray.available_resources().get("CPU", 0) or ray.cluster_resources().get("CPU", 1)))

    def submit(self, fn: Callable, item: Any, *, label: str = "", retries: int = DEFAULT_RETRIES) -> _Ref:
        ref = self._remote.options(max_retries=retries, num_cpus=self.task_cpus, name=label[:100] or None).remote(
            fn, item, label, _fault_spec())
        return _Ref(ref)

    def map_unordered(self, fn, items: Iterable, on_result: Callable, *, label=str, retries: int = DEFAULT_RETRIES,
                      inflight: int | None = None) -> None:
        _drive(lambda x: self.submit(fn, x, label=label(x), retries=retries), items, on_result,
               inflight or 3 * self.parallelism, _wait_refs)

    def map_ordered(self, fn, items: Iterable, *, label=str, retries: int = DEFAULT_RETRIES) -> list:
        refs = [self.submit(fn, x, label=label(x), retries=retries) for x in items]
        return [r.result() for r in refs]

    def map_on_actors(self, cls, init_args: tuple, method: str, items: Iterable, on_result: Callable, *,
                      n_actors: int | None = None, gpus: bool | None = None, describe: str | None = None):
        """Stream ``items`` to ``n_actors`` actors of ``cls(*init_args)`` (one per GPU when the cluster has
        GPUs: ``num_gpus=1``; else ``num_cpus=1`` each, one per CPU), calling ``actor.<method>(item)``;
        ``on_result`` in the caller as calls finish.  Actors are restarted by Ray when their process
        dies and the call is retried.  Returns ``actor.<describe>()`` of the first actor when asked."""
        import ray
        from ray.util import ActorPool

        n_gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = n_gpus > 0 if gpus is None else gpus
        n = max(1, int(n_actors or (n_gpus if use_gpu else self.parallelism)))
        opts = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        actor_cls = ray.remote(cls).options(max_restarts=2, max_task_retries=DEFAULT_RETRIES, **opts)
        actors = [actor_cls.remote(*init_args) for _ in range(n)]
        try:
            info = ray.get(getattr(actors[0], describe).remote()) if describe else None
            pool = ActorPool(actors)
            for r in pool.map_unordered(lambda a, x: getattr(a, method).remote(x), items):
                on_result(r)
            return info
        finally:
            for a in actors:
                ray.kill(a)

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _wait_futures(pending: set) -> tuple[list, set]:
    done, rest = wait(pending, return_when=FIRST_COMPLETED)
    return list(done), set(rest)


def _wait_refs(pending: set) -> tuple[list, set]:
    import ray

    by_ref = {p.ref: p for p in pending}
    ready, _ = ray.wait(list(by_ref), num_returns=1)
    done = [by_ref[r] for r in ready]
    return done, pending - set(done)


def _drive(submit, items, on_result, inflight: int, waiter) -> None:
    """Submit lazily with at most ``inflight`` units outstanding; ``on_result`` in the caller as units finish."""
    pending: set = set()
    try:
        for x in items:
            pending.add(submit(x))
            while len(pending) >= inflight:
                done, pending = waiter(pending)
                for d in done:
                    on_result(d.result())
        while pending:
            done, pending = waiter(pending)
            for d in done:
                on_result(d.result())
    except BaseException:
        for p in pending:
            if isinstance(p, Future):
                p.cancel()
            else:
                try:
                    import ray

                    ray.cancel(p.ref)
                except Exception:  # noqa: BLE001
                    pass
        raise


def get_executor(kind: str = "local", address: str | None = None, num_cpus: int | None = None, **kw):
    """``local`` → :class:`LocalExecutor`; ``ray`` → :class:`RayExecutor` (see the module doc)."""
    if kind == "local":
        if address:
            raise ExecutorError("--ray-address applies to --executor ray only")
        return LocalExecutor(num_cpus, **{k: v for k, v in kw.items() if k == "preload"})
    if kind == "ray":
        return RayExecutor(address, num_cpus, **{k: v for k, v in kw.items() if k != "preload"})
    raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
