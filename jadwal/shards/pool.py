"""Bounded parallel map for the shard writers (processes from a forkserver, or threads)."""
from __future__ import annotations


def pool_map(fn, tasks, workers: int, on_result, *, threads: bool = False, preload: tuple[str, ...] = ()):
    """Run ``fn`` over ``tasks`` (an iterator, consumed lazily) with ``workers`` processes or threads,
    keeping at most ``3 × workers`` tasks in flight; ``on_result(result)`` runs in the caller as results
    arrive.  Runs inline when ``workers`` is 1 or there are fewer than two tasks.

    Processes come from a ``forkserver`` that imports ``fn``'s module (and ``preload``) once and forks
    each worker from that clean, single-threaded process (no fork of a threaded parent; no per-worker
    re-import)."""
    import itertools

    it = iter(tasks)
    head = list(itertools.islice(it, 2))
    if workers <= 1 or len(head) < 2:
        for t in itertools.chain(head, it):
            on_result(fn(t))
        return
    import multiprocessing as mp
    from concurrent.futures import (
        FIRST_COMPLETED,
        ProcessPoolExecutor,
        ThreadPoolExecutor,
        wait,
    )

    if threads:
        ex = ThreadPoolExecutor(max_workers=workers)
    else:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([fn.__module__, *preload])
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    with ex:
        pending = set()
        try:
            for t in itertools.chain(head, it):
                pending.add(ex.submit(fn, t))
                if len(pending) >= 3 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        on_result(f.result())
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    on_result(f.result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise
