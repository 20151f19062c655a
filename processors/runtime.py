"""The runtime: feeds operators from a durable JetStream consumer, publishes, checkpoints, acks.

Delivery: inputs are acked only after (1) the outputs they caused are stored
by JetStream and (2) the operators' state covering them is checkpointed in the
``sw_state`` object store. On start the runtime restores the checkpoint and
repositions its consumer right after it, so a crash or restart re-processes
only uncheckpointed inputs; their outputs carry the same Nats-Msg-Id as before
and JetStream drops the duplicates. Operators that rebuild bulky state by
replay (``replay_from``) get the inputs before the checkpoint again, alone.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ObjectStoreConfig
from nats.js.errors import NotFoundError, ObjectNotFoundError

from schemas import DeadLetter, MetricBatch, Sample, encode, subjects

from processors.consumer import JetStreamPuller, ack_tokens
from processors.dispatch import Dispatcher, decode_message
from processors.operator import Emit, Operator
from swarmwatch.cancellation import stop_task

log = logging.getLogger(__name__)

TELEMETRY_STREAM = "TELEMETRY"
STATE_STORE = "sw_state"
DEFAULT_CHECKPOINT_INTERVAL_S = 2.0
DEFAULT_SELF_METRICS_INTERVAL_S = 10.0
DEFAULT_PUBLISH_TIMEOUT_S = 10.0
DEFAULT_REPLAY_MARGIN_S = 30.0  # store time may trail event time by this much
CHECKPOINT_VERSION = 1
REWIND_RETRY_MIN_S = 0.2
REWIND_RETRY_MAX_S = 5.0
DEFAULT_REWIND_TIMEOUT_S = 15.0  # one attempt to restore and reposition; a read from a store whose leader died can hang
START_RESTORE_ATTEMPTS = 3  # bounded attempts to restore at start before giving up with an error
STOP_TASK_GRACE_S = 5.0  # how long stop() waits for each timer task to end after cancelling it


@dataclass(slots=True)
class RuntimeStats:
    """Counters of one runtime; published on ``sw.self.<name>``."""

    received: int = 0
    processed: int = 0
    replayed: int = 0
    invalid: int = 0
    published: int = 0
    publish_failed: int = 0
    operator_errors: int = 0
    checkpoints: int = 0
    rewinds: int = 0
    gaps: int = 0
    duplicates: int = 0
    other_partitions: int = 0
    last_seq: int = 0
    lag_s: float = 0.0
    by_operator: dict[str, int] = field(default_factory=dict)


class _Checkpoint(msgspec.Struct):
    v: int
    seq: int
    ts: float
    ops: dict[str, Any]
    replay_from: float | None = None
    replay_ops: list[str] = []


class Runtime:
    """Runs ``operators`` over a stream. ``name`` names the durable consumer and the checkpoint.

    ``filter_subjects`` empty means the whole stream. A consumer with several
    filter subjects is about 3x slower for the server to feed than one with one
    or none, so filter one cluster with a single wildcard: ``sw.*.eu-1.>``.
    Several runtimes share the work across processes either by ``filter_subjects``
    (e.g. one per cluster) or by ``partition=(i, n)``:
    instance i of n processes the nodes whose crc32("cluster.node") % n == i and
    skips the rest (each instance still reads the stream, which is cheap next to
    decoding and processing). Each instance needs its own ``name``.
    """

    def __init__(
        self,
        nc: NATS,
        operators: Sequence[Operator],
        *,
        name: str = "processor",
        stream: str = TELEMETRY_STREAM,
        filter_subjects: Sequence[str] = (),
        batch: int = 1000,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        self_metrics_interval_s: float = DEFAULT_SELF_METRICS_INTERVAL_S,
        publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S,
        replay_margin_s: float = DEFAULT_REPLAY_MARGIN_S,
        fresh: bool = False,
        partition: tuple[int, int] = (0, 1),
        state_replicas: int = 1,
        rewind_timeout_s: float = DEFAULT_REWIND_TIMEOUT_S,
    ) -> None:
        subjects.check_token(name, "processor name")
        index, count = partition
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"partition {index}/{count} is invalid; expected I/N with 0 <= I < N, e.g. 0/4")
        self.dispatch = Dispatcher(operators)  # checks that names are unique; counts per operator
        self.nc = nc
        self.js = nc.jetstream()
        self.operators = list(operators)
        self.name = name
        self.stream = stream
        self.filter_subjects = list(filter_subjects)
        self.batch = batch
        self.checkpoint_interval_s = checkpoint_interval_s
        self.self_metrics_interval_s = self_metrics_interval_s
        self.publish_timeout_s = publish_timeout_s
        self.replay_margin_s = replay_margin_s
        self.fresh = fresh
        self.state_replicas = state_replicas
        self.rewind_timeout_s = rewind_timeout_s
        self.partition = (index, count)
        self._part_cache: dict[str, bool] = {}
        self.stats = RuntimeStats()
        self._puller = JetStreamPuller(nc, stream, name, self.filter_subjects, self._on_msg, batch=batch)
        self._futs: list[asyncio.Future[Any]] = []
        self._last_msg: Msg | None = None
        self._last_seq = 0
        self._last_cseq = 0
        self._ckpt_seq = 0
        self._replay_until = 0
        self._replay_ops: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._paused = False
        self._rewinding = False
        self._rewind_task: asyncio.Task[None] | None = None
        self._epoch = 0  # bumped by every rewind: a handler that awaited across one must not advance
        self._lock = asyncio.Lock()
        self._store: Any = None
        self._started = False
        self._initial: dict[str, Any] = {}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Restore the checkpoint, position the consumer, start pulling and the timers."""
        self._store = await self._object_store()
        self._initial = {op.name: op.snapshot() for op in self.operators}
        await self._restore_at_start()
        await self._puller.start()
        self._started = True
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name=f"{self.name}-ticks"),
            asyncio.create_task(self._checkpoint_loop(), name=f"{self.name}-checkpoints"),
            asyncio.create_task(self._self_metrics_loop(), name=f"{self.name}-self-metrics"),
        ]
        log.info("processor %s started at seq %d with operators %s", self.name, self._ckpt_seq + 1, [o.name for o in self.operators])

    async def _restore_at_start(self) -> None:
        """Restore and position, each attempt bounded by ``rewind_timeout_s``.

        nats-py's ``ObjectStore.get`` waits for ever when the checkpoint is replaced
        between reading its info and its chunks, or its stream has just lost its
        leader; a start must not hang on that, so a timed-out attempt is retried
        and the last one fails with an error that says so.
        """
        for attempt in range(1, START_RESTORE_ATTEMPTS + 1):
            try:
                await asyncio.wait_for(self._restore_and_position(), self.rewind_timeout_s)
                return
            except TimeoutError:
                if attempt == START_RESTORE_ATTEMPTS:
                    raise TimeoutError(
                        f"{self.name}: restoring the checkpoint timed out {attempt} times ({self.rewind_timeout_s:g} s each)"
                    ) from None
                log.warning("%s: restoring the checkpoint timed out after %g s; trying again", self.name, self.rewind_timeout_s)

    async def stop(self, *, final: bool = False) -> None:
        """Stop pulling and the timers, flush, checkpoint what was processed (so nothing is redone or lost).

        ``flush`` is called on the operators that checkpoint no state
        (``snapshot()`` is None), since what they hold would otherwise be lost;
        the others keep theirs in the checkpoint and go on after a restart.
        ``final=True`` (no restart will follow) flushes every operator.
        """
        if not self._started:
            return
        self._started = False
        if self._rewind_task is not None and not self._rewind_task.done():
            await stop_task(self._rewind_task, REWIND_RETRY_MAX_S, f"{self.name}'s rewind")
        await self._puller.stop()
        for t in self._tasks:  # repeated cancels: a wait_for inside can swallow one (swarmwatch.cancellation)
            await stop_task(t, STOP_TASK_GRACE_S, t.get_name())
        self._tasks = []
        if not self._paused:
            await self._flush(final)
        try:
            await self.checkpoint()
        except Exception as exc:
            log.warning("final checkpoint of %s failed (%s); uncheckpointed inputs will be re-processed", self.name, exc)

    async def _flush(self, final: bool) -> None:
        now = time.time()
        for op in self.operators:
            if not final and op.snapshot() is not None:
                continue
            try:
                out = self.dispatch.flush_one(op, now)
            except Exception:
                log.exception("operator %s failed on flush", op.name)
                continue
            try:
                await self.publish_all(out)
            except Exception as exc:
                log.warning("outputs of %s's flush not published: %s", op.name, exc)
        self.stats.operator_errors = self.dispatch.stats.errors

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- input

    async def _on_msg(self, msg: Msg) -> None:
        if self._paused:
            return
        seq, cseq, _delivered, stored_ns = ack_tokens(msg.reply)
        if self._last_cseq and cseq != self._last_cseq + 1:
            # a delivery went missing (e.g. across a reconnect): acking past it would lose it
            self.stats.gaps += 1
            log.warning("%s: consumer sequence jumped %d -> %d; rewinding to the checkpoint", self.name, self._last_cseq, cseq)
            self._begin_rewind()
            return
        self._last_cseq = cseq
        epoch = self._epoch
        if seq <= self._last_seq:
            self.stats.duplicates += 1  # a redelivery of something already processed
            return
        try:
            await self._process(msg, seq, stored_ns)
        except Exception as exc:  # an output not sent (connection closed, every publish slot unacked): never ack past it
            self.stats.publish_failed += 1
            if epoch == self._epoch:
                log.warning("%s: outputs of seq %d not sent (%s: %s); rewinding to the checkpoint",
                            self.name, seq, type(exc).__name__, exc)
                self._begin_rewind()
            return
        if epoch == self._epoch:  # else a rewind ran while its outputs were sent: it comes again after the checkpoint
            self._advance(msg, seq)

    async def _process(self, msg: Msg, seq: int, stored_ns: int) -> None:
        """Feed one input to its operators and send what they return."""
        now = time.time()
        self.stats.received += 1
        replay = seq <= self._replay_until
        subject = msg.subject
        if self.partition[1] > 1 and not self._mine(subject):
            self.stats.other_partitions += 1
            return
        try:
            item = decode_message(subject, msg.data)
        except Exception as exc:  # DecodeError; anything else a decoder may raise is dead-lettered too, never fatal
            if not replay:
                self.stats.invalid += 1
                self.dispatch.stats.invalid += 1
                await self._dead(msg, seq, str(exc))
            return
        dispatch = self.dispatch
        dispatch.stats.inputs += 1
        for op in dispatch.route(item):
            if replay and op.name not in self._replay_ops:
                continue
            try:
                out = dispatch.feed(op, item, now, replaying=replay)
            except Exception as exc:  # an operator bug must not stop the others; counted by the dispatcher
                self.stats.operator_errors = dispatch.stats.errors
                log.exception("operator %s failed on %s", op.name, subject)
                if not replay:
                    await self._dead(msg, seq, f"operator {op.name} failed: {exc!r}", stage=f"op-{op.name}")
                continue
            for e in out:  # published per operator: the rules' alerts leave before the heavier work
                await self._publish(e)
        if replay:
            self.stats.replayed += 1
        else:
            self.stats.processed += 1
            self.stats.lag_s = max(0.0, now - stored_ns / 1e9)

    def _begin_rewind(self) -> None:
        """Pause input and rewind to the checkpoint in the background (not once stopping)."""
        self._paused = True
        if self._started and not self._rewinding:
            self._rewind_task = asyncio.get_running_loop().create_task(self._rewind(), name=f"{self.name}-rewind")

    def _mine(self, subject: str) -> bool:
        """Whether this instance's partition owns the subject's node (stable crc32 of cluster.node)."""
        owned = self._part_cache.get(subject)
        if owned is None:
            tok = subject.split(".")
            key = f"{tok[2]}.{tok[3]}" if len(tok) >= 4 else subject
            owned = zlib.crc32(key.encode()) % self.partition[1] == self.partition[0]
            if len(self._part_cache) < 1_000_000:
                self._part_cache[subject] = owned
        return owned

    def _advance(self, msg: Msg, seq: int) -> None:
        self._last_msg = msg
        self._last_seq = seq
        self.stats.last_seq = seq

    async def _dead(self, msg: Msg, seq: int, reason: str, stage: str = "processor") -> None:
        dl = DeadLetter.of(stage, msg.subject, reason, msg.data)
        log.warning("dead letter from %s seq %d: %s", msg.subject, seq, reason)
        await self._publish(Emit(subjects.dlq(stage), dl, f"dlq:{self.name}:{stage}:{seq}"))

    # ---------------------------------------------------------------- output

    async def _publish(self, e: Emit) -> None:
        data = e.message if isinstance(e.message, (bytes, bytearray)) else encode(e.message)
        headers = {"Nats-Msg-Id": e.msg_id} if e.msg_id else None
        # bounded: nats-py's publish window (4,000 unacked) waits for a free slot, for ever without wait_stall
        fut = await self.js.publish_async(e.subject, data, headers=headers, wait_stall=self.publish_timeout_s)
        self._futs.append(fut)
        self.stats.published += 1
        if e.subject.startswith("sw.alerts."):
            await asyncio.sleep(0)  # let the client's flusher send it now, not after the backlog
        if len(self._futs) > 10_000:
            self._futs = [f for f in self._futs if not f.done() or f.exception() is not None]

    async def publish_all(self, emits: Iterable[Emit]) -> None:
        for e in emits:
            await self._publish(e)

    # ---------------------------------------------------------------- checkpoints

    async def checkpoint(self) -> bool:
        """Store outputs, then state, then ack. Returns False if outputs failed (the runtime rewinds)."""
        async with self._lock:
            last, seq = self._last_msg, self._last_seq
            if last is None or seq <= self._ckpt_seq:
                return True
            # state and pending outputs are captured together, with no await between
            ckpt = _Checkpoint(
                v=CHECKPOINT_VERSION,
                seq=seq,
                ts=time.time(),
                ops={op.name: op.snapshot() for op in self.operators},
                replay_from=self._replay_from(),
                replay_ops=[op.name for op in self.operators if op.replay_from() is not None],
            )
            futs, self._futs = self._futs, []
            failed = 0
            if futs:
                done, pending = await asyncio.wait(futs, timeout=self.publish_timeout_s)
                for f in pending:
                    f.cancel()  # its ack is lost: nats-py holds a publish slot until the future is done
                failed = len(pending) + sum(1 for f in done if not f.cancelled() and f.exception() is not None)
            if failed:
                self.stats.publish_failed += failed
                if not self._started:  # stopping: the next start re-processes from the checkpoint
                    log.error("%d outputs of %s were not stored by JetStream; not checkpointed past seq %d",
                              failed, self.name, self._ckpt_seq)
                    return False
                log.error("%d outputs of %s were not stored by JetStream; rewinding to seq %d", failed, self.name, self._ckpt_seq)
                await self._rewind()
                return False
            await self._store.put(self.name, msgspec.msgpack.encode(ckpt))
            await self._puller.ack(last)
            self._ckpt_seq = seq
            self.stats.checkpoints += 1
            return True

    def _replay_from(self) -> float | None:
        starts = [t for op in self.operators if (t := op.replay_from()) is not None and math.isfinite(t)]
        return min(starts) if starts else None

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                await self.checkpoint()
            except Exception as exc:
                log.warning("checkpoint of %s failed: %s; will retry", self.name, exc)

    async def _object_store(self) -> Any:
        try:
            return await self.js.object_store(STATE_STORE)
        except NotFoundError:
            try:
                return await self.js.create_object_store(
                    STATE_STORE, config=ObjectStoreConfig(bucket=STATE_STORE, replicas=self.state_replicas)
                )
            except Exception:
                return await self.js.object_store(STATE_STORE)

    async def _load(self) -> _Checkpoint | None:
        if self.fresh:
            return None
        try:
            res = await self._store.get(self.name)
        except (ObjectNotFoundError, NotFoundError):
            return None
        try:
            return msgspec.msgpack.decode(res.data, type=_Checkpoint)
        except msgspec.DecodeError as exc:
            log.error("checkpoint of %s is unreadable (%s); starting from the beginning of the stream", self.name, exc)
            return None

    async def _restore_and_position(self) -> None:
        ckpt = await self._load()
        self._last_msg = None
        if ckpt is None:
            for op in self.operators:  # back to the state the runtime started with
                op.restore(self._initial[op.name])
            self._ckpt_seq = self._last_seq = self._replay_until = 0
            await self._puller.ensure(recreate=True)
            return
        for op in self.operators:
            if op.name in ckpt.ops:
                op.restore(ckpt.ops[op.name])
        self._ckpt_seq = ckpt.seq
        if ckpt.replay_from is not None:
            self._replay_until = ckpt.seq
            self._replay_ops = set(ckpt.replay_ops)
            self._last_seq = 0  # replayed inputs arrive again from before the checkpoint
            await self._puller.ensure(start_time=ckpt.replay_from - self.replay_margin_s, recreate=True)
        else:
            self._replay_until = 0
            self._last_seq = ckpt.seq
            await self._puller.ensure(start_seq=ckpt.seq + 1, recreate=True)

    async def _rewind(self) -> None:
        """Go back to the last checkpoint: restore state, reposition, pull again.

        One rewind at a time: a second cause (a gap seen while a failed checkpoint
        rewinds) is covered by the one running, which repositions at the checkpoint.
        Each attempt is bounded by ``rewind_timeout_s`` (reading the checkpoint from
        a store whose leader was just lost can wait forever) and retried with backoff.
        """
        self._paused = True
        if self._rewinding:
            return
        self._rewinding = True
        self._epoch += 1
        self.stats.rewinds += 1
        try:
            await self._puller.stop()
            for f in self._futs:
                f.cancel()  # outputs of inputs that come again; their publish slots are freed
            self._futs = []
            self._last_cseq = 0
            delay = REWIND_RETRY_MIN_S
            while True:  # the broker may be electing a leader or away: keep trying, never stay paused
                try:
                    await asyncio.wait_for(self._restore_and_position(), self.rewind_timeout_s)
                    self._paused = False  # before the first pull, so no delivery is skipped as "paused"
                    await self._puller.start()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._paused = True
                    what = f"timed out after {self.rewind_timeout_s:g} s" if isinstance(exc, TimeoutError) else str(exc)
                    log.warning("%s: rewind failed (%s); retrying in %.1f s", self.name, what, delay)
                    await self._puller.stop()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, REWIND_RETRY_MAX_S)
        finally:
            self._rewinding = False

    # ---------------------------------------------------------------- timers

    async def _tick_loop(self) -> None:
        step = self.dispatch.tick_step_s()
        while True:
            await asyncio.sleep(step)
            if self._paused:
                continue
            emits, _failures = self.dispatch.tick(time.time())
            self.stats.operator_errors = self.dispatch.stats.errors
            for e in emits:
                await self._publish(e)

    def self_samples(self) -> list[Sample]:
        """swarmwatch's own counters as samples (``swarmwatch.processor.*``)."""
        s = self.stats
        out = [
            Sample(f"swarmwatch.processor.{k}", float(getattr(s, k)))
            for k in ("received", "processed", "replayed", "invalid", "published", "publish_failed", "operator_errors", "checkpoints", "rewinds", "gaps", "duplicates", "lag_s")
        ]
        for op in self.operators:
            c = self.dispatch.counters(op)  # counted by the dispatcher, not by the operator
            st = op.stats
            lab = {"operator": op.name}
            for k, v in (("inputs", c.inputs), ("outputs", c.outputs), ("errors", c.errors), ("late", st.late), ("dropped", st.dropped)):
                out.append(Sample(f"swarmwatch.operator.{k}", float(v), labels=lab))
            for k, v in st.extra.items():
                out.append(Sample(f"swarmwatch.operator.{k}", float(v), labels=lab))
        return out

    async def _self_metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.self_metrics_interval_s)
            try:
                batch = MetricBatch(cluster="swarmwatch", node=self.name, ts=time.time(), samples=self.self_samples())
                await self.nc.publish(subjects.self_metrics(self.name), encode(batch))
            except Exception as exc:
                log.debug("self metrics of %s not published: %s", self.name, exc)
