"""`livegen render --png`: the player's notes and each generated voice as a piano roll, for a
user who would rather look than read. Drawn with matplotlib (the `plot` extra), imported only
here, so the runtime keeps its small set of dependencies."""
from __future__ import annotations

from pathlib import Path

from livegen.errors import LivegenError

PLAYER_COLOUR = "#404040"
VOICE_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def read_tracks(midi_path: str | Path) -> tuple[list[tuple[str, list[tuple[int, float, float]]]], int]:
    """(track name, [(pitch, start beat, end beat)]) of each track with notes, and the
    beats per bar (from the file's time signature, 4 without one)."""
    import mido

    mid = mido.MidiFile(str(midi_path))
    tracks, beats_per_bar = [], 4
    for k, track in enumerate(mid.tracks):
        name, tick, sounding, notes = f"track {k + 1}", 0, {}, []
        for msg in track:
            tick += msg.time
            if msg.type == "track_name":
                name = msg.name
            elif msg.type == "time_signature":
                beats_per_bar = msg.numerator * 4 // msg.denominator
            elif msg.type in ("note_on", "note_off"):
                key = (msg.channel, msg.note)
                if key in sounding:
                    start = sounding.pop(key)
                    notes.append((msg.note, start / mid.ticks_per_beat, tick / mid.ticks_per_beat))
                if msg.type == "note_on" and msg.velocity > 0:
                    sounding[key] = tick
        if notes:
            tracks.append((name, notes))
    return tracks, beats_per_bar


def draw_roll(midi_path: str | Path, png_path: str | Path, title: str = "") -> None:
    """A piano roll of every track of the file: the player's in dark grey, each voice in its
    own colour, bars marked."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LivegenError("--png draws with matplotlib, which is not installed: "
                           "pip install 'livegen[plot]' (or pip install matplotlib)") from None
    tracks, beats_per_bar = read_tracks(midi_path)
    if not tracks:
        raise LivegenError(f"{midi_path}: no notes to draw")
    end = max(stop for _, notes in tracks for _, _, stop in notes)
    pitches = [p for _, notes in tracks for p, _, _ in notes]
    low, high = min(pitches) - 2, max(pitches) + 2
    bars = end / beats_per_bar
    fig, ax = plt.subplots(figsize=(min(40.0, max(8.0, 0.6 * bars + 2)), max(4.0, (high - low) * 0.12 + 1.5)))
    voice = 0
    for name, notes in tracks:
        if name == "player":
            colour, label = PLAYER_COLOUR, "player"
        else:
            colour, label = VOICE_COLOURS[voice % len(VOICE_COLOURS)], name
            voice += 1
        for i, (pitch, start, stop) in enumerate(notes):
            ax.add_patch(plt.Rectangle((start / beats_per_bar, pitch - 0.4), (stop - start) / beats_per_bar, 0.8,
                                       color=colour, label=label if i == 0 else None, linewidth=0))
    ax.set_xlim(0, max(bars, 1))
    ax.set_ylim(low, high)
    ax.set_xlabel("bar")
    ax.set_ylabel("pitch")
    cs = [p for p in range(low, high + 1) if p % 12 == 0]
    ax.set_yticks(cs, [f"{NAMES[p % 12]}{p // 12 - 1}" for p in cs])
    ax.set_xticks(range(0, int(bars) + 1, max(1, int(bars) // 40)))
    ax.grid(axis="x", color="#cccccc", linewidth=0.6)
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        fig.savefig(str(png_path), dpi=100)
    except OSError as err:
        raise LivegenError(f"{png_path}: cannot write the picture ({err.strerror})") from err
    finally:
        plt.close(fig)
