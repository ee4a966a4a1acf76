#!/usr/bin/env bash
# Regenerate the onair audio sample files in this directory.
#
# Usage: bash samples/make-samples.sh   (from anywhere; output goes next to this script)
#
# Requires: sox, espeak-ng, ffmpeg (with libmp3lame, libvorbis, native aac, flac), ffprobe.
# Idempotent: every run overwrites the same set of files.  Output is deterministic
# for a given tool version: ffmpeg runs in bitexact mode (no encoder/version tags,
# fixed Ogg serial numbers), sox runs in repeatable mode without dither, and the
# broken file is built from arithmetic, not from a random source.
#
# All files produced by this script are part of the onair project and are
# dedicated to the public domain under CC0-1.0 (see README.md).

set -euo pipefail

export LC_ALL=C
export TZ=UTC

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

for tool in sox espeak-ng ffmpeg ffprobe; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

ARTIST="onair samples"
ALBUM="onair test signals"

# sox: -R repeatable, -D no dither, -V1 only errors.
SOX=(sox -R -D -V1)
# ffmpeg: quiet, overwrite, bitexact container and codec (no encoder tags, fixed serials).
FF=(ffmpeg -hide_banner -loglevel error -nostdin -y)
BITEXACT=(-fflags +bitexact -flags:a +bitexact -map_metadata -1)

# 1. station-id.wav -- spoken station ID, 44.1 kHz mono 16-bit PCM, 0.5 s silent tail.
espeak-ng -v en -s 150 -w "$tmp/speech.wav" "You are listening to onair, the live relay."
"${SOX[@]}" "$tmp/speech.wav" -r 44100 -c 1 -b 16 "$tmp/station-id.wav" pad 0 0.5
"${FF[@]}" -i "$tmp/station-id.wav" "${BITEXACT[@]}" \
  -c:a pcm_s16le \
  -metadata title="Station ID" -metadata artist="$ARTIST" -metadata album="$ALBUM" \
  station-id.wav

# 2. tone-440.flac -- 440 Hz sine, 48 kHz stereo, 4 s, peak -6 dBFS (amplitude 0.5).
"${SOX[@]}" -n -r 48000 -c 2 -b 16 "$tmp/tone-440.wav" synth 4 sine 440 vol 0.5
"${FF[@]}" -i "$tmp/tone-440.wav" "${BITEXACT[@]}" \
  -c:a flac -compression_level 8 \
  -metadata TITLE="Tone 440 Hz" -metadata ARTIST="$ARTIST" -metadata ALBUM="$ALBUM" \
  tone-440.flac

# 3. sweep.mp3 -- logarithmic sine sweep 100 Hz -> 8 kHz, 44.1 kHz stereo, 4 s,
#    128 kbit/s CBR MP3 with ID3v2.3 tags.
"${SOX[@]}" -n -r 44100 -c 2 -b 16 "$tmp/sweep.wav" synth 4 sine 100/8000 vol 0.5
"${FF[@]}" -i "$tmp/sweep.wav" "${BITEXACT[@]}" \
  -c:a libmp3lame -b:a 128k -id3v2_version 3 -write_id3v1 0 \
  -metadata title="Sweep" -metadata artist="$ARTIST" -metadata album="$ALBUM" \
  sweep.mp3

# 4. music.ogg -- short synthesised piece: C - Am - F - G, two bars each of
#    plucked eighth-note arpeggios over a soft sine pad, 8 s + 1 s release.
#    Ogg Vorbis ~96 kbit/s, 44.1 kHz stereo.
notes_dir="$tmp/notes"
mkdir -p "$notes_dir"
n=0
bar() { # bar PAD1 PAD2 PAD3 ARP1..ARP8
  local p1=$1 p2=$2 p3=$3; shift 3
  local idx
  idx=$(printf '%02d' "$n")
  # Pad: three soft sines, 2 s, gentle fade in/out.
  "${SOX[@]}" -n -r 44100 -c 1 -b 16 "$notes_dir/pad-$idx.wav" \
    synth 2 sine "$p1" sine "$p2" sine "$p3" remix - vol 0.08 fade q 0.05 2 0.3
  # Arpeggio: eight plucked eighth notes (0.25 s each, at 120 bpm).
  local k=0 a
  for a in "$@"; do
    "${SOX[@]}" -n -r 44100 -c 1 -b 16 "$notes_dir/arp-$idx-$k.wav" \
      synth 0.25 pluck "$a" vol 0.35 fade q 0 0.25 0.05
    k=$((k + 1))
  done
  "${SOX[@]}" "$notes_dir"/arp-"$idx"-?.wav "$notes_dir/arpbar-$idx.wav"
  "${SOX[@]}" -m "$notes_dir/pad-$idx.wav" "$notes_dir/arpbar-$idx.wav" "$notes_dir/bar-$idx.wav"
  n=$((n + 1))
}
bar C3 E3 G3  C4 E4 G4 C5 G4 E4 C4 E4   # C
bar A2 C3 E3  A3 C4 E4 A4 E4 C4 A3 C4   # Am
bar F2 A2 C3  F3 A3 C4 F4 C4 A3 F3 A3   # F
bar G2 B2 D3  G3 B3 D4 G4 D4 B3 G3 B3   # G
# Final chord (C major, 1 s, fading out).
"${SOX[@]}" -n -r 44100 -c 1 -b 16 "$notes_dir/bar-99.wav" \
  synth 1 pluck C4 pluck E4 pluck G4 pluck C5 remix - vol 0.3 fade q 0 1 0.8
"${SOX[@]}" "$notes_dir"/bar-??.wav "$tmp/music-mono.wav"
# Light stereo widening: right channel delayed by 12 ms; trim to 9 s; normalise to -3 dBFS peak.
"${SOX[@]}" "$tmp/music-mono.wav" -c 2 "$tmp/music.wav" remix 1 1 delay 0 0.012 trim 0 9 gain -n -3
"${FF[@]}" -i "$tmp/music.wav" "${BITEXACT[@]}" \
  -c:a libvorbis -b:a 96k -ar 44100 -ac 2 \
  -metadata TITLE="Onair Arpeggio" -metadata ARTIST="$ARTIST" -metadata ALBUM="$ALBUM" \
  music.ogg

# 5. tone-1k.m4a -- 1000 Hz sine, 2 s, AAC-LC (ffmpeg native aac) in MP4, 48 kHz stereo.
"${SOX[@]}" -n -r 48000 -c 2 -b 16 "$tmp/tone-1k.wav" synth 2 sine 1000 vol 0.5
"${FF[@]}" -i "$tmp/tone-1k.wav" "${BITEXACT[@]}" \
  -c:a aac -b:a 128k \
  -metadata title="Tone 1 kHz" -metadata artist="$ARTIST" -metadata album="$ALBUM" \
  tone-1k.m4a

# 6. playlist.m3u -- extended M3U, relative paths, durations from ffprobe (rounded).
duration() {
  ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$1" |
    awk '{ printf "%d", $1 + 0.5 }'
}
{
  echo "#EXTM3U"
  echo "#EXTINF:$(duration station-id.wav),onair samples - Station ID"
  echo "station-id.wav"
  echo "#EXTINF:$(duration tone-440.flac),onair samples - Tone 440 Hz"
  echo "tone-440.flac"
  echo "#EXTINF:$(duration sweep.mp3),onair samples - Sweep"
  echo "sweep.mp3"
  echo "#EXTINF:$(duration music.ogg),onair samples - Onair Arpeggio"
  echo "music.ogg"
  echo "#EXTINF:$(duration tone-1k.m4a),onair samples - Tone 1 kHz"
  echo "tone-1k.m4a"
} > playlist.m3u

# 7. broken.mp3 -- DELIBERATELY BROKEN: 2048 bytes of deterministic garbage
#    (byte i = (i*i*7 + i*31 + 13) mod 251, so no 0xFF byte and hence no MPEG
#    frame sync).  Decoders must reject it; tests use it to check skipping.
awk 'BEGIN { for (i = 0; i < 2048; i++) printf "%c", (i*i*7 + i*31 + 13) % 251 }' > broken.mp3

echo "samples written to $here:"
ls -l station-id.wav tone-440.flac sweep.mp3 music.ogg tone-1k.m4a playlist.m3u broken.mp3
