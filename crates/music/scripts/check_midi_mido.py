"""Reads the MIDI files written by `write_chorale_midi_files` with mido (an independent
reader) and compares every note, the tempo and the time signature with chorales.json."""
import json
import sys

import mido

out_dir, data = sys.argv[1], sys.argv[2]
chorales = json.load(open(data))["chorales"]
bad = 0
for c in chorales:
    mid = mido.MidiFile(f"{out_dir}/{c['id']}.mid")
    tpq = mid.ticks_per_beat
    tempo = ts = None
    tracks = []
    for track in mid.tracks:
        tick, open_, notes, name = 0, {}, [], None
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo" and tempo is None:
                tempo = msg.tempo
            elif msg.type == "time_signature" and ts is None:
                ts = f"{msg.numerator}/{msg.denominator}"
            elif msg.type == "track_name":
                name = msg.name
            elif msg.type == "note_on" and msg.velocity > 0:
                open_.setdefault(msg.note, []).append(tick)
            elif msg.type in ("note_off", "note_on"):
                start = open_[msg.note].pop(0)
                notes.append([start * 4 // tpq, (tick - start) * 4 // tpq, msg.note])
        if notes:
            tracks.append((name, sorted(notes)))
    want = [(t["name"], sorted(t["events"])) for t in c["tracks"]]
    if tracks != want or tempo != 750000 or ts != c["time_signature"]:
        bad += 1
        print("mismatch", c["id"])
print(f"{len(chorales) - bad} of {len(chorales)} files read back identically by mido")
sys.exit(1 if bad else 0)
