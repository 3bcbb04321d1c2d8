from livegen.capture import Capture, parse, split


def test_parse_accepts_the_messages_a_keyboard_sends():
    assert parse([0x91, 60, 100]).kind == "note_on"
    assert parse([0x91, 60, 100]).channel == 1
    assert parse([0x90, 60, 0]).kind == "note_off"      # running-status style note-off
    assert parse([0x80, 60, 64]).kind == "note_off"
    cc = parse([0xB0, 64, 127])
    assert (cc.kind, cc.a, cc.b) == ("cc", 64, 127)
    assert parse([0xF8]).kind == "clock"
    assert parse([0xFA]).kind == "start"
    assert parse([0xF2, 0x10, 0x01]).a == 0x10 | (1 << 7)


def test_parse_flags_malformed_input_without_raising():
    for bad in ([], [0x90, 60], [0x90, 60, 200], [0x40, 1, 2], [0xF4], [0xF0, 1, 2], ["x"], [0x90, 60, 1, 2]):
        assert parse(bad).kind == "bad", bad
    assert parse([0xF0, 0x7E, 0x7F, 0xF7]).kind == "sysex"
    assert (parse([0xC0, 5]).kind, parse([0xC0, 5]).a) == ("program", 5)     # (picks a preset)
    assert parse([0xD0, 5]).kind == "other"


def test_capture_quantises_notes_onto_the_grid():
    cap = Capture()
    cap.note_on(60, 90, 3.8)      # early: step 4
    cap.note_off(60, 7.9)
    cap.note_on(62, 80, 8.2)      # late: step 8
    cap.note_off(62, 9.0)
    assert [(n.pitch, n.start, n.end, n.velocity) for n in cap.phrase(0, 16)] == [(60, 4, 8, 90), (62, 8, 9, 80)]


def test_sustain_pedal_holds_released_notes_until_it_is_lifted():
    cap = Capture()
    cap.sustain(True, 0)
    cap.note_on(60, 90, 0)
    cap.note_off(60, 2)
    cap.sustain(False, 6)
    assert [(n.start, n.end) for n in cap.phrase(0, 16)] == [(0, 6)]


def test_phrase_holds_notes_still_down_to_its_end_and_clips_long_ones():
    cap = Capture()
    cap.note_on(60, 90, 10)
    cap.note_on(64, 90, 14)
    cap.note_off(60, 20)
    first = cap.phrase(0, 16)
    assert [(n.pitch, n.start, n.end) for n in first] == [(60, 10, 16), (64, 14, 16)]
    second = cap.phrase(16, 32)
    assert [(n.pitch, n.start, n.end) for n in second] == [(60, 16, 20), (64, 16, 32)]


def test_same_key_again_ends_the_earlier_note():
    cap = Capture()
    cap.note_on(60, 90, 0)
    cap.note_on(60, 90, 4)
    cap.note_off(60, 6)
    assert [(n.start, n.end) for n in cap.phrase(0, 16)] == [(0, 4), (4, 6)]


def test_a_cut_off_sysex_does_not_swallow_the_notes_after_it():
    # rtmidi hands over a sysex that never ended joined with what followed, up to an F7
    joined = [0xF0, 0x43, 0x10, 0x90, 62, 90, 0x80, 62, 0, 0xF8, 0xF7]
    parts = split(joined)
    assert parts == [[0xF0, 0x43, 0x10], [0x90, 62, 90], [0x80, 62, 0], [0xF8]]
    assert [parse(p).kind for p in parts] == ["bad", "note_on", "note_off", "clock"]
    assert split([0xF0, 1, 2, 0xF7]) == [[0xF0, 1, 2, 0xF7]] and parse([0xF0, 1, 2, 0xF7]).kind == "sysex"
    assert split([0xF7]) == []                            # the input guard's lone F7 is no message
    assert split([0x90, 60, 90]) == [[0x90, 60, 90]]


def test_a_key_down_past_the_limit_is_ended_when_another_is_struck():
    """A note-off lost (a dropped message, garbage on the line) would leave the key down for
    ever, sounding in every later phrase. Past the limit, the next key struck ends it; a key
    held alone, or notes held by the pedal, stay."""
    c = Capture(hold_limit=32)
    c.note_on(84, 90, 0.0)                          # its note-off never comes
    c.note_on(67, 80, 10.0)
    c.note_off(67, 14.0)
    assert 84 in c.held and c.stuck == 0            # 10 steps: a held note, as far as anyone knows
    c.sustain(True, 20.0)
    c.note_on(60, 80, 20.0)
    c.note_off(60, 22.0)                            # held by the pedal from here
    c.note_on(69, 80, 40.0)                         # 40 steps after the 84
    assert 84 not in c.held and c.stuck == 1
    assert 60 in c.pedalled and 69 in c.held
    assert [n for n in c.phrase(40, 72) if n.pitch == 84] == []       # not in the phrases after
    assert (84, 0, 40) in [(n.pitch, n.start, n.end) for n in c.notes]
    alone = Capture(hold_limit=32)
    alone.note_on(72, 90, 0.0)
    assert 72 in alone.held and alone.phrase(64, 96)[0].pitch == 72     # nothing struck since
    never = Capture(hold_limit=0)
    never.note_on(84, 90, 0.0)
    never.note_on(67, 80, 400.0)
    assert 84 in never.held
