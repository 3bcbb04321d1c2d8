"""The MIDI ports of a live session: open them, give them the names users see, guard a
keyboard's input against a cut-off SysEx (JACK), reconnect what is unplugged, send."""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from livegen.errors import LivegenError, PortError
from livegen.ports import InputPoller, JackLinks, PortWatcher, match_port, open_guard, open_port, release

log = logging.getLogger("livegen")


@dataclass
class Input:
    port_name: str               # our port: "in", or "clock" (--clock-port)
    spec: str                    # what was asked for: "virtual" or (part of) a port's name
    name: str = ""               # the name users see (the device's, or ours on JACK)
    port: object = None          # the rtmidi input; None while unplugged
    poller: InputPoller | None = None
    auto: bool = False           # found by `--input all`: forgotten when unplugged, found again when back
    held: set = field(default_factory=set)      # (channel, pitch) of the keys down on it
    pedals: set = field(default_factory=set)    # channels whose sustain pedal is down on it

    @property
    def device(self) -> bool:
        return self.spec != "virtual"

    def track(self, data) -> None:
        """The poller's thread: which keys and pedals this input holds down."""
        if len(data) != 3:
            return
        kind, key = data[0] & 0xF0, (data[0] & 0x0F, data[1])
        if kind == 0x90 and data[2] > 0:
            self.held.add(key)
        elif kind in (0x80, 0x90):
            self.held.discard(key)
        elif kind == 0xB0 and data[1] == 64:
            (self.pedals.add if data[2] >= 64 else self.pedals.discard)(key[0])

    def release(self) -> list[list[int]]:
        """What ends everything this input left down when it was unplugged: a note-off for
        each key, then the pedal up on each channel."""
        msgs = [[0x80 | ch, pitch, 0] for ch, pitch in sorted(self.held)]
        msgs += [[0xB0 | ch, 64, 0] for ch in sorted(self.pedals)]
        self.held, self.pedals = set(), set()
        return msgs


def wanted_inputs(sources: list[str], client_name: str, ignore: list[str]) -> list[str]:
    """`--input all`: the MIDI sources to listen to. Never our own ports (the output, the
    guards), nor another livegen's (a client named livegen...: its output into our input
    would feed each other's answers back), nor one whose name contains an `ignore` entry."""
    own = re.compile(re.escape(client_name) + r"(-\d+)?(-guard|-watch|-links)?(-\d+)?", re.IGNORECASE)
    out = []
    for name in sources:
        client = name.split(":")[0]
        if own.fullmatch(client) or client.lower().startswith("livegen"):
            continue
        if any(pattern.lower() in name.lower() for pattern in ignore):
            continue
        out.append(name)
    return out


class Hub:
    def __init__(self, backend: str, client_name: str, feed):
        self.backend, self.client_name, self.feed = backend, client_name, feed
        self.inputs: list[Input] = []
        self.out = None
        self.out_name = ""
        self.out_spec = "virtual"
        self.out_lost = False
        self.out_seen = time.perf_counter()     # the output (opened by name) was last seen then
        self.watcher: PortWatcher | None = None
        self.links: JackLinks | None | bool = None     # JACK: the output's connections (False: cannot)
        self.linked: set[str] = set()
        self.unlinked = False          # a connection was removed: the next one made gets the missed note-offs
        self.unlinked_at = 0.0
        self.link_lock = threading.Lock()     # (the link watch's look and libjack's notification thread)
        self.link_watch: LinkWatch | None = None
        self.checked = time.perf_counter()
        self.clock = time.perf_counter        # (the output's connections' looks; a test's own clock)
        # runs what holds the GIL for ms (opening and closing ports) where the music leaves a
        # gap: the session hands in Scheduler.in_gap
        self.quiet: Callable[[Callable], object] = lambda fn: fn()
        self.auto = False              # --input all: every source, now and when plugged in
        self.ignore: list[str] = []
        self.refused: set[str] = set()    # sources that could not be opened (said once)
        self.opened = 0
        self.check = SelfCheck(self)      # (JACK) every client of ours must hear itself

    def open(self, inputs: list[tuple[str, str]], output: str, ignore: list[str] = ()) -> None:
        """`inputs`: (our port name, spec) pairs; the spec "all" is our virtual input plus
        every source there is (see `wanted_inputs`, `discover`). Inputs first: on JACK the
        first client keeps the plain name (livegen:in), the output client gets a suffix
        (livegen-01:out)."""
        if ("in", "all") in inputs:
            self.auto, self.ignore = True, list(ignore)
            inputs = [(name, "virtual" if (name, spec) == ("in", "all") else spec) for name, spec in inputs]
        for port_name, spec in inputs:
            entry = Input(port_name, spec)
            self._open_input(entry)
            self.inputs.append(entry)
        if self.backend == "jack":
            for entry in self.inputs:
                self._guard(entry)
                self.check.input(entry)
        self.out_spec = output
        self.out, self.out_name = self._open_output(output)
        if self.backend == "jack":
            self._name_virtual_ports()
        if self.auto:
            self.discover(self._ports()[0])

    def discover(self, sources: list[str]) -> None:
        """`--input all`: open each wanted source that is not open yet."""
        have = {e.name for e in self.inputs if e.device}
        seen = time.perf_counter()
        for name in wanted_inputs(sources, self.client_name, self.ignore):
            if name in have:
                continue
            self.opened += 1
            entry = Input(f"in{self.opened}", name, auto=True)
            try:
                self.quiet(lambda: self._reopen_input(entry))
            except LivegenError as err:
                if name not in self.refused:
                    log.warning("cannot listen to %s: %s", name, err)
                    self.refused.add(name)
                continue
            self.refused.discard(name)
            self.inputs.append(entry)
            log.info("input %s connected", entry.name)
            log.debug("input %s: seen and opened in %.0f ms", entry.name, (time.perf_counter() - seen) * 1000)

    def _open_input(self, entry: Input) -> None:
        spec = entry.name if entry.device and entry.port is None and entry.name else entry.spec
        entry.port, entry.name = open_port("in", self.backend, spec, self.client_name, entry.port_name)
        entry.port.ignore_types(sysex=False, timing=False, active_sense=False)   # see InputPoller
        feed, taken = self.feed, self.check.taken

        def deliver(t: float, data) -> None:
            if taken(data):
                return
            entry.track(data)
            feed(t, data)

        entry.poller = InputPoller(entry.port, deliver)
        entry.poller.start()

    def send(self, msg: list[int]) -> None:
        if self.out is not None:     # (None: the server is gone, see `abandon`)
            self.out.send_message(msg)

    def _ports(self) -> tuple[list[str], list[str]]:
        """(sources, destinations): the ports an input can listen to and an output play to.
        JACK: read from the server's shared memory by the connections' client, which has no
        process callback (a client made and closed for each look took 100 to 600 ms, longer the more
        clients there were: a keyboard plugged in was heard up to 2 s later). Elsewhere
        through one long-lived pair of rtmidi clients."""
        if self.backend == "jack" and self._links() is not None:
            return self.links.ports(sources=True), self.links.ports(sources=False)
        if self.watcher is None:
            self.watcher = PortWatcher(self.backend, self.client_name)
        return self.watcher.inputs(), self.watcher.outputs()

    def _links(self) -> JackLinks | None:
        if self.links is None:
            try:
                self.links = JackLinks(self.client_name)
            except (OSError, LivegenError) as err:
                log.warning("cannot watch the output's connections (%s): a synth disconnected while a note "
                            "sounds may hold it", err)
                self.links = False
        return self.links or None

    def _own_port(self, port_name: str, ports: list[str]) -> str | None:
        """The full JACK name of a port of ours among `ports` (JACK may have renamed the client)."""
        pattern = re.escape(self.client_name) + r"(-\d+)?:" + re.escape(port_name)
        hits = [n for n in ports if re.fullmatch(pattern, n)]
        return hits[-1] if hits else None

    def _guard(self, entry: Input) -> None:
        """JACK: let the input's poller end a cut-off sysex (see InputPoller): on every input,
        a device's (an unplugged cable, a firmware fault) and our virtual one (a DAW or a
        program that sends garbage). The guard is a second source into the input, which JACK
        then mixes each cycle: with a 1.33 ms cycle that lost a few more messages (3.2 vs 1.4
        of 3,000, livegen 0.1.0, 2026-11-26); with 5.3 ms, on a busy machine, it lost no more
        (1 vs 2 bursts of 900: `benchmarks/jack_drops.py --period 256 --second 0 1`)."""
        own = self._own_port(entry.port_name, self._ports()[1])   # (inputs are among destinations)
        if own is not None:
            entry.poller.guard = open_guard(self.backend, self.client_name, own)

    def _name_virtual_ports(self) -> None:
        """JACK renames a second client of the same name (livegen-01): report the real names."""
        ins, outs = self._ports()
        for entry in self.inputs:
            if not entry.device:
                entry.name = self._own_port(entry.port_name, outs) or entry.name
        if self.out_spec == "virtual":
            self.out_name = self._own_port("out", ins) or self.out_name

    def watch(self, scheduler) -> None:
        """Reconnect an unplugged keyboard; silence and reconnect a lost output, which then
        gets the note-offs it missed (`Scheduler.unlinked`, `relinked`): a synth behind a
        replugged interface would hold them."""
        if not self.auto and not any(e.device for e in self.inputs) and self.out_spec == "virtual":
            return
        if self.backend != "jack" and self.watcher is None:
            self.quiet(self._ports)
        ins, outs = self._ports()
        for entry in list(self.inputs):
            if not entry.device:
                continue
            if entry.port is not None and entry.name not in ins:
                self.quiet(lambda: self._close_input(entry))
                ended = entry.release()     # its note-offs will never come: end its notes here
                now = time.perf_counter()
                for msg in ended:
                    self.feed(now, msg)
                log.warning("input %s is gone%s; waiting for it to come back", entry.name,
                            f" (ended the {sum(m[0] & 0xF0 == 0x80 for m in ended)} notes it held)" if ended else "")
                if entry.auto:       # (found again by `discover` when it comes back)
                    self.inputs.remove(entry)
            elif entry.port is None and entry.name in ins:
                self.quiet(lambda: self._reopen_input(entry))
                log.info("input %s is back", entry.name)
        if self.auto:
            self.discover(ins)
        if self.out_spec != "virtual":
            if self.out is not None and self.out_name not in outs and not self.out_lost:
                log.warning("output %s is gone: silencing, waiting for it to come back", self.out_name)
                scheduler.unlinked(since=self.out_seen)
                self.out_lost = True
            elif self.out_lost and self.out_name in outs:
                self.quiet(self._reopen_output)
                self.out_lost = False
                scheduler.relinked()
                log.info("output %s is back: sent the note-offs it missed", self.out_name)
            if not self.out_lost:
                self.out_seen = time.perf_counter()

    def _close_input(self, entry: Input) -> None:
        entry.poller.stop()
        release(entry.port)
        entry.port = None

    def _reopen_input(self, entry: Input) -> None:
        self._open_input(entry)
        if self.backend == "jack":
            self._guard(entry)
            self.check.input(entry)

    def _reopen_output(self) -> None:
        new, _ = self._open_output(self.out_name)
        old, self.out = self.out, new
        release(old)

    def _open_output(self, spec: str):
        """Open the output: (rtmidi port, the name users see); on JACK heard by our first input
        before it is used (`SelfCheck.output`)."""
        opened = self.check.output(spec) if self.backend == "jack" and self.inputs and self._links() else None
        return opened or open_port("out", self.backend, spec, self.client_name)

    def watch_links(self, scheduler) -> None:
        """JACK, our virtual output: from a thread of its own (`LinkWatch`), look at its
        connections every few ms. (An output opened by name is watched by `watch`: "is gone".)"""
        if self.link_watch is None and self._links() is not None:
            self.link_watch = LinkWatch(self, scheduler)
            self.link_watch.start()

    def look_at_links(self, scheduler) -> None:
        """A connection removed (a cable, a DAW's routing): the notes sounding are ended; when a
        connection is made again, it gets the note-offs it missed (if `connection_coming` has not
        sent them already)."""
        now = self.clock()
        # (libjack makes this wait 1.1 JACK cycles while a connection change is pending)
        found = self.links.connections(self.out_name)
        with self.link_lock:
            if found is not None:
                linked = set(found)
                gone, made = self.linked - linked, linked - self.linked
                if gone:
                    log.warning("output %s: disconnected from %s: ending the notes sounding", self.out_name,
                                ", ".join(sorted(gone)))
                    scheduler.unlinked(since=self.checked)
                    self.unlinked, self.unlinked_at = True, now
                if made and self.unlinked:
                    self._send_missed(scheduler, "to " + ", ".join(sorted(made)))
                elif self.unlinked and not linked:
                    scheduler.presend()     # (no one hears them until a connection is made)
                self.linked = linked
            self.checked = now

    def connection_coming(self, scheduler) -> None:
        """libjack says a connection of our output is being made (`LinkWatch`, on libjack's
        notification thread): it carries messages from the next JACK cycle, before a look can
        see it, so the note-offs missed go now, as `look_at_links` sends them on seeing it."""
        with self.link_lock:
            if self.unlinked:
                self._send_missed(scheduler, "again")

    def _send_missed(self, scheduler, to: str) -> None:
        """A connection is back: the note-offs it missed (now, and a few times more from the
        scheduler's thread: `Scheduler.relinked`); under the link lock."""
        scheduler.relinked()
        self.unlinked = False
        log.info("output %s: connected %s: sent the note-offs missed", self.out_name, to)

    def stop_watching_links(self, server_alive: bool = True) -> None:
        if self.link_watch is not None:
            self.link_watch.stop()
            self.link_watch = None
            if self.links and server_alive:     # (a call to a dead server waits for it in vain)
                self.links.deactivate()

    def abandon(self) -> None:
        """The MIDI server is gone: its ports are left as they are (closing a client of a
        dead JACK server waits for it in vain)."""
        self.stop_watching_links(server_alive=False)
        for entry in self.inputs:
            if entry.poller is not None:
                entry.poller.port.cancel_callback()
                entry.poller.halt.set()
            entry.poller, entry.port = None, None
        self.out = None
        self.watcher = None
        self.links = None

    def close(self) -> None:
        self.stop_watching_links()
        if self.out is not None:
            # the last note-offs and CC 123/120 sit in rtmidi's buffer until the MIDI API's
            # next cycles take them: closing at once would lose them
            time.sleep(0.1)
            release(self.out)
            self.out = None
        for entry in self.inputs:
            if entry.poller is not None:
                entry.poller.stop()
            if entry.port is not None:
                release(entry.port)
                entry.port = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        # (the connections' client is not closed: deactivated by `stop_watching_links`, it holds
        # up nothing, and the server forgets it when the process ends)
        self.links = None


class SelfCheck:
    """JACK: every client of ours that carries music must hear itself before it is used.

    libjack keeps one table of its clients' wake-up futexes per process, by the server's client
    number, and frees a departed client's entry when one of the process's clients takes in the
    server's "client removed" notice, which is sent without waiting. A client opened before
    that notice is taken in (a busy machine) gets the departed client's number, finds the entry
    "already connected" and waits on the departed client's futex for ever: jackd logs "NAME was
    not finished, state = Triggered" every half second and nothing it sends or is sent gets
    through (issue 13, item 3; `benchmarks/jack_refnum_race.py` makes it happen on demand). So a
    probe (a SysEx under the non-commercial ID, "lg" and a number) goes from the output, or an
    input's guard, into our input, which takes it out before the engine sees it; sent again
    every AGAIN_S (a lost JACK cycle is no fault), not heard within WAIT_S: the client is opened
    again, TRIES times at most."""

    PREFIX = [0xF0, 0x7D, 0x6C, 0x67]
    WAIT_S, AGAIN_S, TRIES = 0.5, 0.1, 4

    def __init__(self, hub: Hub):
        self.hub = hub
        self.awaited: dict[tuple, threading.Event] = {}
        self.n = 0

    def taken(self, data) -> bool:
        """An input's thread: a probe (ours, late or not) is never the engine's."""
        if data[:4] != self.PREFIX:
            return False
        heard = self.awaited.get(tuple(data))
        if heard is not None:
            heard.set()
        return True

    def heard(self, send: Callable[[list[int]], None]) -> bool:
        """Send a probe with `send` until one of our inputs hears it (True) or WAIT_S passes."""
        self.n = (self.n + 1) % (1 << 14)
        msg = self.PREFIX + [self.n >> 7, self.n & 0x7F, 0xF7]
        heard = self.awaited[tuple(msg)] = threading.Event()
        deadline = time.perf_counter() + self.WAIT_S
        try:
            while True:
                send(msg)
                left = deadline - time.perf_counter()
                if heard.wait(min(self.AGAIN_S, max(left, 0.0))):
                    return True
                if left <= self.AGAIN_S:
                    return False
        finally:
            del self.awaited[tuple(msg)]

    def input(self, entry: Input) -> None:
        """The input and its guard: the guard's probe must come in, else both are opened again.
        An input without a guard is not checked."""
        hub = self.hub
        for attempt in range(self.TRIES + 1):
            if entry.poller is None or entry.poller.guard is None or self.heard(entry.poller.probe):
                return
            if attempt == self.TRIES:
                break
            log.warning("input %s: JACK does not run it (a probe from its guard went unheard for %.1f s); "
                        "opening it again (%d of %d)", entry.name, self.WAIT_S, attempt + 1, self.TRIES)
            hub.quiet(lambda: hub._close_input(entry))
            hub._open_input(entry)
            hub._guard(entry)
        log.error("input %s: JACK never ran it in %d tries; it may stay deaf: restart livegen", entry.name,
                  self.TRIES)

    def output(self, spec: str):
        """Our output as a port of our own, heard by our first input, then connected to the port
        `spec` names unless it is "virtual" (so no synth ever hears a probe): (rtmidi port, the
        name users see), or None where it cannot be looped back to check."""
        hub = self.hub
        for attempt in range(1, self.TRIES + 1):
            port, _ = open_port("out", hub.backend, "virtual", hub.client_name)
            own_out = hub._own_port("out", hub.links.ports(sources=True))
            own_in = hub._own_port(hub.inputs[0].port_name, hub.links.ports(sources=False))
            if own_out is None or own_in is None or not hub.links.connect(own_out, own_in):
                release(port)
                return None
            try:
                heard = self.heard(port.send_message)
            finally:
                hub.links.connect(own_out, own_in, made=False)
            if heard:
                return (port, own_out) if spec == "virtual" else self._connect(port, own_out, spec)
            log.warning("output %s: JACK does not run it (a probe to our input went unheard for %.1f s); "
                        "opening it again (%d of %d)", own_out, self.WAIT_S, attempt, self.TRIES)
            release(port)
        raise PortError(f"JACK never ran livegen's output client in {self.TRIES} tries (see the warnings "
                        "above); restart livegen")

    def _connect(self, port, own: str, spec: str):
        destinations = self.hub.links.ports(sources=False)
        try:
            dest = destinations[match_port(destinations, spec, "output")]
            if not self.hub.links.connect(own, dest):
                raise PortError(f"cannot connect {own} to {dest}")
        except PortError:
            release(port)
            raise
        return port, dest


class LinkWatch(threading.Thread):
    """Looks at our virtual output's connections (JACK) every LOOK_S, and every FAST_S from a
    removal until the connection is made again (FAST_FOR_S at most: the look that sends the
    missed note-offs into nothing, `presend`; 64 ms p50 when the session's main loop looked
    every 0.1 s), and at once when libjack says a connection was made or removed
    (`JackLinks.on_change`). A connection of ours being made gets its missed note-offs from
    libjack's notification thread itself (`Hub.connection_coming`), before the first cycle
    that carries it: a look then would wait in libjack for that cycle (1.1 cycles, 5.9 ms at
    -p 256). A look reads the server's shared memory: 7 us; the thread takes 4.8 % of a core
    while it looks every 2 ms, 0.35 % every 50 ms (2-core machine of benchmarks/README.md)."""

    LOOK_S, FAST_S, FAST_FOR_S = 0.05, 0.002, 60.0

    def __init__(self, hub: Hub, scheduler):
        super().__init__(name="livegen-links", daemon=True)
        self.hub, self.scheduler = hub, scheduler
        self.halt = threading.Event()
        self.wake = threading.Event()      # (set by libjack's notification thread, and by `stop`)
        self.said = False                  # a failed look or notification was logged
        self.told = hub.links.on_change(self._told, hub.out_name)
        if not self.told:
            log.info("libjack does not say when a connection changes: looking every %g s", self.LOOK_S)

    def _told(self, ours: str | None, made: bool) -> None:
        """libjack's notification thread: a connection changed somewhere on the server."""
        try:
            if ours and made and not self.halt.is_set():
                self.hub.connection_coming(self.scheduler)
        except Exception as err:    # (never into libjack: looked at again by the thread)
            self._failed(err)
        self.wake.set()

    def _failed(self, err: Exception) -> None:
        if not self.said:
            log.warning("cannot look at the output's connections: %s", err)
        self.said = True

    def run(self) -> None:
        hub = self.hub
        while not self.halt.is_set():
            self.wake.wait(self.FAST_S if hub.unlinked and hub.clock() - hub.unlinked_at < self.FAST_FOR_S
                           else self.LOOK_S)
            self.wake.clear()
            if self.halt.is_set():
                break
            try:
                hub.look_at_links(self.scheduler)
            except Exception as err:    # (never the end of the music: said once, looked at again)
                self._failed(err)

    def stop(self) -> None:
        self.halt.set()
        self.wake.set()
        if self is not threading.current_thread():
            self.join(1)
