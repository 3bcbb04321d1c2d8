import subprocess
import sys

import mido
import pytest

from tests import tinymodels


def write_song(path, notes, tpb=480, channel=0, sustain=None):
    mid = mido.MidiFile(ticks_per_beat=tpb)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100)))
    step = tpb // 4
    events = []
    for pitch, start, end in notes:
        events.append((start * step, mido.Message("note_on", note=pitch, velocity=90, channel=channel)))
        events.append((end * step - 10, mido.Message("note_off", note=pitch, channel=channel)))
    if sustain:
        events += [(sustain[0] * step, mido.Message("control_change", control=64, value=127)),
                   (sustain[1] * step, mido.Message("control_change", control=64, value=0))]
    last = 0
    for t, msg in sorted(events, key=lambda e: e[0]):
        tr.append(msg.copy(time=t - last))
        last = t
    mid.save(path)


def rendered_notes(path):
    """(channel, pitch, start step, end step) of every note in the file."""
    mid = mido.MidiFile(path)
    step = mid.ticks_per_beat / 4
    out, open_ = [], {}
    for tr in mid.tracks:
        now = 0
        for m in tr:
            now += m.time
            if m.type == "note_on" and m.velocity:
                open_[(m.channel, m.note)] = now
            elif m.type in ("note_off", "note_on"):
                s = open_.pop((m.channel, m.note))
                out.append((m.channel, m.note, round(s / step), round(now / step)))
    return sorted(out)


def livegen(*args):
    return subprocess.run([sys.executable, "-m", "livegen", *args], capture_output=True, text=True, timeout=120)


def test_render_answers_each_phrase_in_the_next_on_its_channels(tmp_path, shift_model):
    song = tmp_path / "in.mid"
    melody = [(72, 0, 4), (74, 4, 8), (76, 8, 16), (77, 32, 36), (79, 36, 40)]
    write_song(song, melody)
    out = tmp_path / "out.mid"
    r = livegen("render", str(song), str(out), "--model", str(shift_model))
    assert r.returncode == 0, r.stderr
    notes = rendered_notes(out)
    player = [n for n in notes if n[0] == 0]
    assert [(p, s, e) for _, p, s, e in player] == sorted(melody)
    generated = [n for n in notes if n[0] != 0]
    want = sorted((1 + k, p - sh, s + 32, e + 32) for p, s, e in melody for k, sh in enumerate((3, 12, 24)))
    assert generated == want


def test_render_splits_held_notes_where_the_model_marks_onsets(tmp_path):
    model = tinymodels.shift_accompany(tmp_path / "onsets.onnx", onsets_every=4)
    song = tmp_path / "in.mid"
    write_song(song, [(72, 0, 8)])
    out = tmp_path / "out.mid"
    assert livegen("render", str(song), str(out), "--model", str(model)).returncode == 0
    alto = [(s, e) for ch, p, s, e in rendered_notes(out) if ch == 1]
    assert alto == [(32, 36), (36, 40)]


def test_render_moves_a_low_melody_up_into_the_model_and_back(tmp_path, shift_model):
    song = tmp_path / "low.mid"
    write_song(song, [(48, 0, 4), (50, 4, 8)])        # two octaves under the soprano range
    out = tmp_path / "out.mid"
    assert livegen("render", str(song), str(out), "--model", str(shift_model)).returncode == 0
    bass = [p for ch, p, s, e in rendered_notes(out) if ch == 3]
    assert bass == [48 - 24, 50 - 24]


def test_render_with_the_bundled_model_writes_three_voices_under_the_tune(tmp_path):
    song = tmp_path / "tune.mid"
    write_song(song, [(67 + i % 5, 4 * i, 4 * i + 4) for i in range(16)], sustain=(60, 64))
    out = tmp_path / "out.mid"
    r = livegen("render", str(song), str(out), "--seed", "3")
    assert r.returncode == 0, r.stderr
    notes = rendered_notes(out)
    for ch in (1, 2, 3):
        voice = [n for n in notes if n[0] == ch]
        assert voice, f"no notes on channel {ch + 1}"
        assert all(s >= 32 for _, _, s, _ in voice)          # answers come one phrase later
    assert max(p for ch, p, *_ in notes if ch == 3) < min(p for ch, p, *_ in notes if ch == 0)


@pytest.mark.parametrize("content, message", [(b"MThd\x00\x00", "not a readable MIDI file"),
                                              (None, "not a readable MIDI file")])
def test_render_rejects_bad_files_clearly(tmp_path, shift_model, content, message):
    bad = tmp_path / "bad.mid"
    if content is not None:
        bad.write_bytes(content)
    r = livegen("render", str(bad), str(tmp_path / "o.mid"), "--model", str(shift_model))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("where, message", [("missing/o.mid", "cannot write there: no folder"),
                                            (".", "cannot write the MIDI file")])
def test_render_says_when_it_cannot_write_the_output(tmp_path, shift_model, where, message):
    song = tmp_path / "in.mid"
    write_song(song, [(72, 0, 4)])
    r = livegen("render", str(song), str(tmp_path / where), "--model", str(shift_model))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("model", ["continue", "harmonise"])
def test_render_in_follow_mode_harmonises_every_step_under_the_tune(tmp_path, model):
    song = tmp_path / "in.mid"
    write_song(song, [(67 + i % 5, 2 * i, 2 * i + 2) for i in range(16)])
    out = tmp_path / "out.mid"
    r = livegen("render", str(song), str(out), "--model", model, "--mode", "follow", "--seed", "1")
    assert r.returncode == 0 and "in 32 steps" in r.stdout, (r.stdout, r.stderr)
    notes = rendered_notes(out)
    for ch in (1, 2, 3):                                  # alto, tenor and bass, under the tune, in time
        voice = [n for n in notes if n[0] == ch]
        assert voice and all(0 <= s < 32 for _, _, s, _ in voice), voice
    assert max(p for ch, p, *_ in notes if ch == 3) < min(p for ch, p, *_ in notes if ch == 0)


def test_the_seed_picks_one_of_several_accompaniments_and_repeats_it(tmp_path, jsb_path):
    """The accompany GAN's noise (the seed) changes the voices; the same seed gives the same ones."""
    import json

    chorale = json.loads(jsb_path.read_text())["test"][0]
    sop = [step[0] for step in chorale][:128]            # 8 bars of a held-out soprano
    tune, t = [], 0
    while t < len(sop):
        p, s = sop[t], t
        while t < len(sop) and sop[t] == p:
            t += 1
        if p >= 0:
            tune.append((p, s, t))
    song = tmp_path / "tune.mid"
    write_song(song, tune)

    def voices(seed):
        out = tmp_path / f"out-{seed}.mid"
        r = livegen("render", str(song), str(out), "--seed", str(seed))
        assert r.returncode == 0, r.stderr
        grid = {}
        for ch, pitch, s, e in rendered_notes(out):
            if ch:
                for step in range(s, e):
                    grid[ch, step] = pitch
        return grid

    one, two, again = voices(1), voices(2), voices(1)
    assert one == again
    cells = set(one) | set(two)
    changed = sum(one.get(c) != two.get(c) for c in cells) / len(cells)
    assert changed > 0.1, f"seed 2 changed only {changed:.0%} of the voices' steps"


def test_a_mode_given_the_wrong_kind_of_model_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "livegen", "render", "in.mid", str(tmp_path / "o.mid"),
                        "--mode", "follow", "--model", "accompany"], capture_output=True, text=True)
    assert r.returncode == 2 and "mode follow plays harmonise or continue models" in r.stderr


@pytest.mark.parametrize("mode,model", [("loop", "accompany"), ("loop", "edit"), ("respond", "continue"),
                                        ("respond", "edit"), ("follow", "continue"), ("follow", "harmonise")])
def test_render_writes_what_live_plays_for_the_same_seed(tmp_path, mode, model):
    """The same melody played live (the engine on a virtual clock, as `livegen run` drives it)
    and rendered from a file with the same seed: the same notes on the same channels and steps."""
    from livegen.config import Settings
    from livegen.models import Model
    from livegen.render import render
    from tests.virtual import MELODY, Rig

    tune = MELODY + [(p, s + 32, e + 32) for p, s, e in MELODY]
    loaded = Model(model, "cpu")
    rig = Rig(loaded, mode=mode, seed=5)
    step_s = 60 / (120 * 4)
    t0 = rig.t0
    rig.play(tune, t0, step_s, velocity=90, off_early_s=10 / 480 * step_s * 4)
    end = 64 if mode == "follow" else 96
    rig.run_until(t0 + end * step_s)
    rig.engine.playing.close(end)
    rig.engine.scheduler.pump(rig.clock.t)
    live = sorted((ch, p, round((t - t0) / step_s)) for t, ch, p, _ in rig.note_ons())
    song, out = tmp_path / "in.mid", tmp_path / "out.mid"
    write_song(song, tune)
    render(str(song), str(out), Settings(model=loaded.info.path, mode=mode, seed=5).check(), loaded, progress=False)
    rendered = sorted((ch, p, s) for ch, p, s, _ in rendered_notes(out) if ch != 0)
    assert len(live) > 20 and rendered == live


def test_render_draws_the_player_and_each_voice_as_a_piano_roll(tmp_path, shift_model):
    import numpy as np
    from PIL import Image

    from livegen.picture import PLAYER_COLOUR, VOICE_COLOURS

    song, out, png = tmp_path / "in.mid", tmp_path / "out.mid", tmp_path / "roll.png"
    write_song(song, [(72, 0, 4), (74, 4, 8), (76, 8, 16)])
    r = livegen("render", str(song), str(out), "--model", str(shift_model), "--png", str(png))
    assert r.returncode == 0 and f"wrote {png}" in r.stdout, r.stderr
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)

    def columns(colour):          # the image columns where a colour is painted
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        return np.nonzero((np.abs(pixels - rgb).sum(axis=2) < 6).any(axis=0))[0]

    width = pixels.shape[1]
    player = columns(PLAYER_COLOUR)
    assert len(player) > width / 10             # the tune, drawn across its bar
    for colour in VOICE_COLOURS[:3]:            # alto, tenor, bass: each its own colour...
        voice = columns(colour)
        assert len(voice) > width / 10
        assert voice.min() > player.min() + width / 5    # ...a phrase later than the tune


def test_render_png_without_matplotlib_says_how_to_get_it(tmp_path, shift_model):
    song = tmp_path / "in.mid"
    write_song(song, [(72, 0, 4)])
    code = ("import sys; sys.modules['matplotlib'] = None; from livegen.cli import main; "
            f"sys.exit(main(['render', {str(song)!r}, {str(tmp_path / 'o.mid')!r}, '--model', {str(shift_model)!r}, "
            f"'--png', {str(tmp_path / 'o.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install 'livegen[plot]'" in r.stderr, r.stderr


def semitone_clashes(notes, player) -> tuple[int, int]:
    """(voice-steps a semitone, mod 12, from a note the player holds then; voice-steps sounding
    while the player holds a note)."""
    held = {}
    for _, p, s, e in player:
        for t in range(s, e):
            held.setdefault(t, set()).add(p)
    clashes = steps = 0
    for _, p, s, e in notes:
        for t in range(s, e):
            if held.get(t):
                steps += 1
                clashes += any((p - q) % 12 in (1, 11) for q in held[t])
    return clashes, steps


@pytest.mark.parametrize("mode, model", [("loop", "accompany"), ("respond", "continue"), ("respond", "edit")])
def test_the_voices_fit_both_hands_and_the_bass_follows_the_players(tmp_path, jsb_path, mode, model):
    """A player looping soprano and bass of a JSB test chorale (each 2-bar phrase twice): the
    answer to a phrase, sounding while it is played again, clashes by a semitone with the
    held notes less often than Bach's own inner voices do (2.6 %); before livegen heard both
    hands it was 5.9 % (benchmarks/both_hands.py), and the bass channel played a bass line
    of its own under the player's. Now the bass voice follows the player's, and no voice
    goes under it. respond + continue decodes each answer step before the keys struck on it
    are known: a step that does not fit them is decoded again (before that, 5.9 % clashes
    and another bass on 15 % of the steps, `python -m training.evaluate continue --heard`).
    respond + edit answers with a variation of the phrase before, made at the cut: its notes
    that do not fit the keys held as they sound are ended (before: 2 % of its voice-steps
    under the player's bass, another bass on 5 % of the steps)."""
    import json

    chorale = json.loads(jsb_path.read_text())["test"][1]
    notes = []
    for k in range(2):
        for voice in (0, 3):
            part = [int(r[voice]) for r in chorale[32 * k:32 * k + 32]]
            t = 0
            while t < 32:
                end = t + 1
                while end < 32 and part[end] == part[t]:
                    end += 1
                if part[t] >= 0:
                    notes += [(part[t], 64 * k + t, 64 * k + end), (part[t], 64 * k + 32 + t, 64 * k + 32 + end)]
                t = end
    song, out = tmp_path / "hands.mid", tmp_path / "out.mid"
    write_song(song, notes)
    r = livegen("render", str(song), str(out), "--seed", "1", "--mode", mode, "--model", model)
    assert r.returncode == 0, r.stderr
    rendered = rendered_notes(out)
    second = [n for n in rendered if n[0] != 0 and n[2] // 32 in (1, 3)]     # over the repeats
    player = [n for n in rendered if n[0] == 0]
    clashes, steps = semitone_clashes(second, player)
    assert steps > 150 and clashes / steps < 0.026, (clashes, steps)
    for phrase in (1, 3):
        lows = {(p, s) for _, p, s, e in player if s // 32 == phrase and p < 60}
        if model == "accompany":     # the bass voice plays the player's own bass notes
            bass = {(p, s) for ch, p, s, e in second if ch == 3 and s // 32 == phrase}
            assert bass and bass <= lows, sorted(bass - lows)
        elif model == "continue":    # the answer's bass is silent under the player's bass line
            assert lows and not [n for n in second if n[0] == 4 and any(a <= n[2] < b for _, p, a, b in player
                                                                        if p < 60)], second
    for ch, p, s, e in second:
        held = [q for _, q, a, b in player if a <= s < b]
        bass_line = len(held) >= 2 and (model == "accompany" or min(held) < 60 or max(held) - min(held) >= 12)
        assert not bass_line or p >= min(held), (ch, p, s, held)    # nothing under the player's bass
        # (continue: a low note above middle C and within an octave of the tune is an inner voice)


@pytest.mark.parametrize("mode, model", [("loop", "accompany"), ("loop", "edit"), ("respond", "edit")])
def test_an_answer_made_before_the_player_changed_the_bass_does_not_clash_with_the_new_one(tmp_path, mode, model):
    """A phrase's answer is made from the phrase before; the player repeats the tune over a
    bass a semitone higher. The answer's notes that a key struck (or held) on their step
    does not fit are ended as the keys come: no note a semitone from a held key, none under
    the player's bass (before, the answer played its C and G against the player's C# and G#)."""
    tune = [(72, 0, 4), (74, 4, 8), (76, 8, 12), (77, 12, 16), (79, 16, 24), (76, 24, 32)]
    notes = tune + [(48, 0, 16), (43, 16, 32)]
    notes += [(p, s + 32, e + 32) for p, s, e in tune] + [(49, 32, 48), (44, 48, 64)]
    song, out = tmp_path / "moved.mid", tmp_path / "out.mid"
    write_song(song, notes)
    r = livegen("render", str(song), str(out), "--mode", mode, "--model", model, "--seed", "3")
    assert r.returncode == 0, r.stderr
    rendered = rendered_notes(out)
    player = [n for n in rendered if n[0] == 0]
    answer = [n for n in rendered if n[0] != 0 and 32 <= n[2] < 64]
    assert len(answer) >= 6, answer
    for ch, p, s, e in answer:
        held = [q for _, q, a, b in player if a <= s < b]
        assert not any((p - q) % 12 in (1, 11) for q in held), (ch, p, s, held)
        assert p >= min(held), (ch, p, s, held)


def test_respond_answers_over_a_held_chord_without_clashing_and_its_bass_on_the_players(tmp_path):
    """respond + continue: the player holds C3 and G3 while the answer to a melody plays. The
    answer is decoded a step ahead as the phrase is played, and a step decoded before the
    chord was struck on it is decoded again, so from its first step on it hears the chord:
    no voice a semitone (mod 12) against C or G, none under C3, and no bass of its own: the
    player's C3 is the bass (before, the whole answer was decoded at the cut, deaf to it;
    then it heard the chord from its third step on only, its bass doubling C3)."""
    melody = [(67, 0, 4), (69, 4, 6), (71, 6, 8), (72, 8, 16), (71, 16, 18), (69, 18, 20), (67, 20, 24),
              (72, 24, 32)]
    song, out = tmp_path / "call.mid", tmp_path / "answer.mid"
    write_song(song, melody + [(48, 32, 64), (55, 32, 64)])
    r = livegen("render", str(song), str(out), "--mode", "respond", "--model", "continue", "--seed", "2")
    assert r.returncode == 0, r.stderr
    answer = [n for n in rendered_notes(out) if n[0] != 0 and 32 <= n[2] < 64]     # (the melody's answer)
    assert len(answer) >= 8
    heard = answer       # every note, from the first step on
    assert all((p - q) % 12 not in (1, 11) for _, p, _, _ in heard for q in (48, 55)), heard
    assert all(p >= 48 for _, p, _, _ in heard), heard
    assert {ch for ch, *_ in answer} == {1, 2, 3}, answer       # soprano, alto, tenor; the bass (4) silent


def test_evaluate_heard_measures_both_hands_through_render(tmp_path, jsb_path):
    """`python -m training.evaluate MODEL --heard` plays soprano and bass into `livegen render`
    and prints the both-hands table: Bach's row, the model's, and the tune-only row; the
    model's voices never under the player's bass, and more of them sound than the tune-only
    decoder's (whose notes that clash are ended as the keys are struck)."""
    import json

    r = subprocess.run([sys.executable, "-m", "training.evaluate", "accompany", "--jsb", str(jsb_path), "--limit",
                        "2", "--heard", "--json", str(tmp_path / "e.json")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "### Both hands" in r.stdout and "| Bach's alto and tenor |" in r.stdout, r.stdout
    hands = json.loads((tmp_path / "e.json").read_text())["rows"]["heard"]["hands"]
    ours, before = hands["loop, accompany"], hands["loop, accompany, tune only"]
    assert ours["voice_steps"] > 500
    # the tune-only decoder's notes that clash are ended as the keys come (`PhraseAnswers`):
    # its voices sound less; the both-hands decoder's need no ending
    assert ours["clashes"] <= before["clashes"] and ours["voice_steps"] > 1.1 * before["voice_steps"]
    assert ours["under"] == 0
