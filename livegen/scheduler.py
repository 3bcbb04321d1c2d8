"""Timestamped output: one thread owns the output port and sends each message at its deadline.

Generated notes are scheduled by grid step; the step's time comes from the clock when the
scheduler looks at it, so a tempo change or a MIDI clock drift moves them along. A note-on
whose deadline has passed by more than `late_ms` is dropped and counted, never played late;
every note-on that was sent gets its note-off. `panic` ends every sounding note, then sends
CC 123 (all notes off) and CC 120 (all sound off) on every channel used.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

NOTE_ON, NOTE_OFF, CONTROL = 0x90, 0x80, 0xB0
SPIN_S = 0.0008   # the last part of a wait is a spin; sleeping that close is not precise enough
ECHO_S = 0.012    # every note-off goes once more this much later (two JACK cycles of 5.3 ms)
CHORE_GAP_S = 0.03   # `in_gap`: a chore runs where nothing is due for this long (opening a JACK
                     # port holds the GIL for up to 20 ms: python-rtmidi does not release it)


class NoteLedger:
    """Which notes are sounding on which channel, so that none is left on."""

    def __init__(self):
        self.sounding: dict[tuple[int, int], int | None] = {}   # (channel, pitch) -> id of the note sounding
        self.channels: set[int] = set()

    def on(self, channel: int, pitch: int, note_id: int | None = None) -> bool:
        """Record a note-on; True when the same note was already sounding (send a note-off first)."""
        self.channels.add(channel)
        key = (channel, pitch)
        again = key in self.sounding
        self.sounding[key] = note_id
        return again

    def off(self, channel: int, pitch: int, note_id: int | None = None) -> bool:
        """Record a note-off; False when that note is not sounding (then send nothing): also
        when the same pitch was struck again since, by a newer note, which sounds on."""
        key = (channel, pitch)
        if key not in self.sounding:
            return False
        current = self.sounding[key]
        if note_id is not None and current is not None and current != note_id:
            return False
        del self.sounding[key]
        return True

    def release_all(self) -> list[tuple[int, int]]:
        notes = sorted(self.sounding)
        self.sounding.clear()
        return notes


def panic_messages(ledger: NoteLedger, extra_channels: set[int] = frozenset()) -> list[list[int]]:
    msgs = [[NOTE_OFF | ch, pitch, 0] for ch, pitch in ledger.release_all()]
    for ch in sorted(ledger.channels | set(extra_channels)):
        msgs.append([CONTROL | ch, 123, 0])
        msgs.append([CONTROL | ch, 120, 0])
    return msgs


class Lateness:
    """How many ms late things went out: the whole session in a histogram (0.05 ms bins up to
    1 s, the last bin holds the rest), so that memory stays fixed however long it runs, and the
    last `recent` values as they are."""

    BIN_MS, BINS = 0.05, 20_000

    def __init__(self, recent: int = 256):
        self.counts = np.zeros(self.BINS + 1, dtype=np.int64)
        self.recent: deque = deque(maxlen=recent)
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        self.counts[min(int(max(ms, 0.0) / self.BIN_MS), self.BINS)] += 1
        self.recent.append(ms)
        self.max_ms = max(self.max_ms, ms)

    def __len__(self) -> int:
        return int(self.counts.sum())

    def percentile(self, q: float) -> float:
        """The upper edge of the bin that holds the q-th percentile (at most the largest value)."""
        cum = np.cumsum(self.counts)
        k = int(np.searchsorted(cum, q / 100 * cum[-1]))
        return min((k + 1) * self.BIN_MS, self.max_ms)

    def line(self) -> str:
        return (f"p50 {self.percentile(50):.2f} ms, p99 {self.percentile(99):.2f} ms, max {self.max_ms:.2f} ms "
                f"({len(self)} notes)")


class Chores:
    """Work for the scheduler's thread, done where the music leaves a gap (`Scheduler.in_gap`):
    each (latest start, fn, done event, result) runs once, in order."""

    def __init__(self):
        self.items: deque = deque()

    def take(self, now: float, next_due: float | None):
        """The first chore, when nothing is due for CHORE_GAP_S or its latest start has come."""
        if self.items and (next_due is None or next_due - now > CHORE_GAP_S or self.items[0][0] <= now):
            return self.items.popleft()
        return None

    def wait_s(self, now: float) -> float:
        return self.items[0][0] - now if self.items else 0.25

    @staticmethod
    def run(item) -> None:
        _, fn, done, result = item
        try:
            result["result"] = fn()
        except BaseException as err:      # (raised again in the caller's thread)
            result["error"] = err
        finally:
            done.set()

    def run_all(self) -> None:
        while self.items:
            self.run(self.items.popleft())


class OffsAgain:
    """Note-offs that are sent once more: every one ECHO_S later (a MIDI cycle lost by a busy
    JACK graph, or a synth busy for a moment, must not leave a note sounding: 1 note in 150
    stop events of `benchmarks/reliability.py` hung so, its note-off heard by neither
    listener), except where the same key has been struck since; and those a removed
    connection missed, when it is made again (`Scheduler.unlinked`, `relinked`): at once and
    RESENDS times more, every RESEND_S. The scheduler's thread and lock."""

    # JACK loses what is sent before the cycle in which a connection is made, and libjack says
    # so 2-3 ms before that cycle: the missed note-offs go out again every RESEND_S, RESENDS
    # times (into the connections that stayed too: a handful of note-offs for keys not sounding)
    RESEND_S, RESENDS = 0.003, 4

    def __init__(self):
        self.recent: deque = deque(maxlen=4096)      # (time, channel, pitch) of the note-offs sent
        self.missed: set[tuple[int, int]] = set()    # those a removed connection missed
        self.echo: deque = deque()                   # (when, note-off) to send once more
        self.rounds: deque = deque()                 # when the missed ones go again (`relinked`)
        self.quiet: list[list[int]] = []             # missed ones sent to no connection (`presend`)

    @property
    def echo_at(self) -> float | None:
        due = [self.echo[0][0]] if self.echo else []
        return min(due + list(self.rounds)[:1], default=None)

    def sent_since(self, since: float) -> set[tuple[int, int]]:
        return {(ch, pitch) for t, ch, pitch in self.recent if t >= since}

    def sent(self, now: float, msg: list[int]) -> None:
        self.recent.append((now, msg[0] & 0x0F, msg[1]))
        self.echo.append((now + ECHO_S, msg))

    def echo_due(self, now: float, sounding) -> list[list[int]]:
        """The note-offs due once more by `now`: echoes, then a round of the missed ones (the
        last round only for keys not sounding, and it forgets them)."""
        out = []
        while self.echo and self.echo[0][0] <= now:
            msg = self.echo.popleft()[1]
            if (msg[0] & 0x0F, msg[1]) not in sounding:
                out.append(msg)
        while self.rounds and self.rounds[0] <= now:
            self.rounds.popleft()
            last = not self.rounds
            out += [[NOTE_OFF | ch, p, 0] for ch, p in sorted(self.missed) if not (last and (ch, p) in sounding)]
            if last:
                self.missed = set()
        return out


class Amends:
    """What the scheduler does to notes already scheduled or sent: a connection of the output
    lost and found again, a generated step taken back (a key struck on an answer's step after
    it was decoded). A part of `Scheduler`: each takes its lock."""

    def take_back(self, note_id: int, channel: int, pitch: int, off_only: bool = False) -> bool:
        """Undo a note from `schedule_on` (with `off_only`: only its note-off, so that it sounds
        on). True when what is taken back had not been sent; a note-on that was is ended now."""
        with self._cond:
            mine = lambda e: e[2] == note_id and not (off_only and e[1] == 1)    # noqa: E731
            taken = {e[1] for e in self._heap if mine(e)}      # 1: its note-on, 0: its note-off
            if taken:
                self._heap = [e for e in self._heap if not mine(e)]
                heapq.heapify(self._heap)
            if off_only:
                return 0 in taken
            if 1 not in taken:
                self._dropped_ids.discard(note_id)
                self._now.append((note_id, [NOTE_OFF | channel, pitch, 0], None, True))
                self._cond.notify()
            return 1 in taken

    def unlinked(self, since: float) -> None:
        """A connection of the output was removed, at `since` at the earliest: the port on the
        other end missed the note-offs sent since, and will miss those of the notes sounding.
        They are ended now (panic) and kept for `relinked` (rounds still due for an earlier
        return are dropped: they would forget these)."""
        with self._cond:
            self.offs.missed |= set(self.ledger.sounding) | self.offs.sent_since(since)
            self.offs.rounds.clear()
        self.panic(clear=False)     # (the music goes on for the connections that remain)

    def relinked(self) -> None:
        """A connection was made again: the note-offs it missed (a synth there would hold
        those notes until the same key came again), also for a key struck again meanwhile (the
        synth missed that note-on and would hold the old note until the new one ends: up to
        0.74 s in `reliability.py`'s follow runs); now, and from this thread RESENDS times more
        every RESEND_S (`OffsAgain`), the last time only for keys not sounding: JACK can lose
        what is sent as a connection is made. Safe from any thread."""
        with self._cond:
            for ch, pitch in sorted(self.offs.missed):
                self._now.append((None, [NOTE_OFF | ch, pitch, 0], None, True))
            now = self.now()
            self.offs.rounds = deque(now + k * OffsAgain.RESEND_S for k in range(1, OffsAgain.RESENDS + 1))
            self._cond.notify()

    def presend(self) -> None:
        """The output has no connection left since one was removed: the note-offs it missed
        go out now, into nothing, at each look until one is made, so that a connection's
        first JACK cycle carries them (not the cycle after the look that sees it). Not for
        keys sounding again; not echoed or recorded: nobody hears them."""
        with self._cond:
            self.offs.quiet = [[NOTE_OFF | ch, p, 0] for ch, p in sorted(self.offs.missed)
                               if (ch, p) not in self.ledger.sounding]
            self._cond.notify()


class Scheduler(Amends, threading.Thread):
    """Sends scheduled and immediate MIDI messages through `send(bytes_list)` from one thread."""

    def __init__(self, send: Callable[[list[int]], None], time_of: Callable[[float], float | None],
                 late_ms: float = 10.0, on_sent: Callable[[float, list[int]], None] | None = None,
                 now: Callable[[], float] = time.perf_counter):
        super().__init__(name="livegen-scheduler", daemon=True)
        self._send = send
        self.now = now
        self.time_of = time_of
        self.late_s = late_ms / 1000
        self.on_sent = on_sent
        self.ledger = NoteLedger()
        self._heap: list = []
        self._now: deque = deque()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._halt = threading.Event()
        self._panic = threading.Event()
        self._panic_channels: set[int] = set()
        self._dropped_ids: set[int] = set()
        self._closed = False      # after `close_notes`: no new notes
        self._chores = Chores()
        self.beat = time.monotonic()
        self.offs = OffsAgain()
        self.stats = {"sent": 0, "late_dropped": 0, "send_errors": 0}
        self.late = Lateness()              # ms after its deadline each note-on left
        self.follow_delays = Lateness()     # ms from a player's note to its harmony (follow)
        self.clock_ticks_per_step: float | None = None
        self._next_clock_step: float | None = None

    # ---------------------------------------------------------------- called from other threads

    def schedule_note(self, start_step: float, end_step: float, channel: int, pitch: int, velocity: int) -> None:
        note_id = self.schedule_on(start_step, channel, pitch, velocity)
        self.schedule_off(end_step, note_id, channel, pitch)

    def schedule_on(self, step: float, channel: int, pitch: int, velocity: int) -> int:
        """A note-on at a grid step whose end is not known yet; returns its id for schedule_off."""
        with self._cond:
            note_id = next(self._seq)
            if not self._closed:
                heapq.heappush(self._heap, (step, 1, note_id, [NOTE_ON | channel, pitch, velocity]))
                self._cond.notify()
            return note_id

    def schedule_off(self, step: float, note_id: int, channel: int, pitch: int) -> None:
        with self._cond:
            if not self._closed:
                heapq.heappush(self._heap, (step, 0, note_id, [NOTE_OFF | channel, pitch, 0]))
                self._cond.notify()

    def note_now(self, channel: int, pitch: int, velocity: int, since: float | None = None) -> int:
        """A note-on as soon as possible (follow mode); end it with schedule_off. `since` is when
        the player's note that caused it arrived: the delay is kept in `follow_delays`."""
        with self._cond:
            note_id = next(self._seq)
            if not self._closed:
                self._now.append((note_id, [NOTE_ON | channel, pitch, velocity], since, True))
                self._cond.notify()
            return note_id

    def send_now(self, msg: list[int]) -> None:
        with self._cond:
            self._now.append((None, msg, None, True))
            self._cond.notify()

    def panic(self, clear: bool = True, channels: set[int] = frozenset()) -> None:
        """End all sounding notes (and forget what is scheduled when `clear`)."""
        with self._cond:
            if clear:
                self._heap.clear()
            self._panic_channels |= set(channels)
            self._panic.set()
            self._cond.notify()

    def close_notes(self, channels: set[int] = frozenset()) -> None:
        """At the end: every sounding note ended now, and no new note from here on (messages
        sent as they are, such as a clock Stop, still go)."""
        with self._cond:
            self._closed = True
            self._now = deque(item for item in self._now if item[0] is None)
        self.panic(channels=channels)

    def in_gap(self, fn: Callable[[], object], wait_s: float = 2.0):
        """Run `fn` on this thread where nothing is due for CHORE_GAP_S (or after `wait_s`
        at the latest) and return what it returns. For work that holds the GIL, such as
        opening a MIDI port: done in a gap of the music, it makes no note late."""
        if not self.is_alive() or threading.current_thread() is self:
            return fn()
        item = (self.now() + wait_s, fn, threading.Event(), {})
        with self._cond:
            self._chores.items.append(item)
            self._cond.notify()
        while not item[2].wait(0.5):
            if not self.is_alive():
                with self._cond:
                    if item in self._chores.items:     # the thread ended before it came to it
                        self._chores.items.remove(item)
                        Chores.run(item)
                break
        if "error" in item[3]:
            raise item[3]["error"]
        return item[3].get("result")

    def start_clock_output(self, from_step: float, ticks_per_step: float) -> None:
        with self._cond:
            self.clock_ticks_per_step = ticks_per_step
            self._next_clock_step = from_step
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        """Panic, then end the thread."""
        self.panic()
        self._halt.set()
        with self._cond:
            self._cond.notify()
        if self.is_alive():
            self.join(timeout)

    def log_timing(self) -> None:
        """At the end of a session: how late the note-ons went out, and follow mode's delays."""
        if len(self.late):
            log.info("note-ons sent after their deadline: %s", self.late.line())
        if len(self.follow_delays):
            log.info("follow: harmony sent after the player's note: %s", self.follow_delays.line())

    # ---------------------------------------------------------------- the thread

    def _emit(self, msg: list[int], again: bool = False, heard: bool = True) -> None:
        try:
            self._send(msg)
            self.stats["sent"] += 1
            if msg[0] & 0xF0 == NOTE_OFF and not again:
                self.offs.sent(self.now(), msg)
        except Exception as err:   # a lost port must not kill the thread that ends notes
            self.stats["send_errors"] += 1
            if self.stats["send_errors"] < 5:
                log.warning("send failed: %s", err)
        if self.on_sent and heard:
            self.on_sent(self.now(), msg)

    def _do_panic(self) -> None:
        """Every sounding note's own note-off, then CC 123/120 (the note-offs go once more
        ECHO_S later: `OffsAgain`)."""
        msgs = panic_messages(self.ledger, self._panic_channels)
        for msg in msgs:
            self._emit(msg)

    def _send_immediate(self, note_id: int | None, msg: list[int], since: float | None, echo: bool) -> None:
        """`echo`: a note-off goes once more ECHO_S later (not for the hub's own repeats)."""
        if note_id is None:
            self._emit(msg, again=not echo)
            return
        if msg[0] & 0xF0 == NOTE_OFF:      # (`take_back`: a note taken back after it was sent)
            if self.ledger.off(msg[0] & 0x0F, msg[1], note_id):
                self._emit(msg)
            return
        if self.ledger.on(msg[0] & 0x0F, msg[1], note_id):
            self._emit([NOTE_OFF | (msg[0] & 0x0F), msg[1], 0])
        self._emit(msg)
        if since is not None:
            self.follow_delays.add((self.now() - since) * 1000)

    def _deliver(self, msg: list[int], note_id: int | None, deadline: float, now: float) -> None:
        kind, ch, pitch = msg[0] & 0xF0, msg[0] & 0x0F, msg[1]
        if kind == NOTE_ON:
            if now - deadline > 0.003:    # (-v: which notes were late, to find what held them up)
                log.debug("note-on ch %d pitch %d: %.1f ms after its deadline", ch + 1, pitch, (now - deadline) * 1000)
            if now - deadline > self.late_s:
                self.stats["late_dropped"] += 1
                self._dropped_ids.add(note_id)
                return
            if self.ledger.on(ch, pitch, note_id):
                self._emit([NOTE_OFF | ch, pitch, 0])
            self._emit(msg)
            self.late.add((self.now() - deadline) * 1000)
        elif kind == NOTE_OFF:
            if note_id in self._dropped_ids:
                self._dropped_ids.discard(note_id)
                return
            if self.ledger.off(ch, pitch, note_id):
                self._emit(msg)
        else:
            self._emit(msg)

    def run(self) -> None:
        try:
            self._loop()
        finally:
            with self._cond:
                while self._now:
                    self._send_immediate(*self._now.popleft())
                self._do_panic()
                self._chores.run_all()
                while self.offs.echo_at is not None:       # (the end waits for the echoes: 12 ms at most)
                    time.sleep(max(0.0, self.offs.echo_at - self.now()))
                    for msg in self.offs.echo_due(self.offs.echo_at, self.ledger.sounding):
                        self._emit(msg, again=True)

    def _next_due(self) -> tuple[str, float] | None:
        """("note" or "clock", deadline) of what is sent next; under the lock."""
        due = None
        if self._heap:
            deadline = self.time_of(self._heap[0][0])
            if deadline is not None:
                due = ("note", deadline)
        if self._next_clock_step is not None:
            tick_time = self.time_of(self._next_clock_step)
            if tick_time is not None and (due is None or tick_time < due[1]):
                due = ("clock", tick_time)
        return due

    def _send_due(self, kind: str) -> None:
        """Its deadline has come: send it; under the lock."""
        # a note-on asked for at once may have come in since: send it before any note-off
        # that ends it (or that note-off would find nothing to end)
        while self._now:
            self._send_immediate(*self._now.popleft())
        if kind == "clock":
            self._emit([0xF8])
            self._next_clock_step += 1 / self.clock_ticks_per_step
            return
        if not self._heap:
            return
        step, _, note_id, msg = self._heap[0]
        deadline = self.time_of(step)
        if deadline is None or deadline > self.now() + SPIN_S:
            return
        heapq.heappop(self._heap)
        self._deliver(msg, note_id, deadline, self.now())

    def _send_urgent(self) -> None:
        """A panic and the messages asked for at once; under the lock."""
        if self._panic.is_set():
            self._panic.clear()
            self._do_panic()
        while self._now:
            self._send_immediate(*self._now.popleft())
        for msg in self.offs.echo_due(self.now(), self.ledger.sounding):
            self._emit(msg, again=True)
        quiet, self.offs.quiet = self.offs.quiet, []
        for msg in quiet:
            self._emit(msg, again=True, heard=False)

    def next_due(self) -> float | None:
        """When the next scheduled message is due (for a virtual clock)."""
        with self._cond:
            due = [d[1] for d in [self._next_due()] if d is not None]
            return min(due + ([self.offs.echo_at] if self.offs.echo_at else []), default=None)

    def pump(self, now: float) -> None:
        """Without the thread (a virtual clock): send everything due by `now`."""
        with self._cond:
            self._send_urgent()
            while (due := self._next_due()) is not None and due[1] <= now:
                self._send_due(due[0])

    def _loop(self) -> None:
        while not self._halt.is_set():
            self.beat = time.monotonic()      # (the watchdog: this thread turns at least every 0.25 s)
            with self._cond:
                self._send_urgent()
                due = self._next_due()
                now = self.now()
                chore = self._chores.take(now, None if due is None else due[1])
                if chore is None:
                    wait = min(0.25, self._chores.wait_s(now))   # idle: wake rarely; new work notifies at once
                    if self.offs.echo_at is not None:
                        wait = min(wait, self.offs.echo_at - now)
                    if due is not None:
                        wait = min(wait, due[1] - now - SPIN_S)
                    if wait > 0:
                        self._cond.wait(wait)
                    if wait > 0 or due is None or due[1] - now > SPIN_S:    # (or an echo is due: sent above)
                        continue
            if chore is not None:       # (outside the lock: the other threads may queue meanwhile)
                Chores.run(chore)
                continue
            # spin the last fraction of a millisecond, outside the lock; sleep(0) hands the GIL
            # over each turn, so the MIDI callback (which needs it) is never held up
            while self.now() < due[1]:
                time.sleep(0)
            with self._cond:
                self._send_due(due[0])
