//! Interop with real broadcaster tools and players (Debian's packages, installed by
//! `make deps-test`): liquidsoap, ezstream, ices2 and darkice push a tone to a relay on 127.0.0.1:0
//! and listeners decode that tone and see every title; ffmpeg, mpv, VLC and GStreamer join
//! `/x.ogg` and `/x.mp3` mid-stream, decode the tone cleanly and report the ICY titles.
#![allow(clippy::unwrap_used)]

mod common;
mod interop_support;

use std::time::Duration;

use common::*;
use interop_support::*;
use onair::protocol::SourceState;

const KEY: &str = "SECRET";
/// Time allowed for titles to reach listeners once a tool is live.
const TITLES_WITHIN: Duration = Duration::from_secs(20);

/// The numbers in titles `{prefix}N{suffix}`, repeats of the previous one left out; any other
/// title fails the test.
fn numbered(titles: &[String], prefix: &str, suffix: &str) -> Vec<u32> {
    let mut numbers: Vec<u32> = titles
        .iter()
        .map(|t| {
            let n = t.strip_prefix(prefix).and_then(|t| t.strip_suffix(suffix));
            n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected title {t:?}"))
        })
        .collect();
    numbers.dedup();
    numbers
}

/// liquidsoap changes the title every 2 s; for Ogg every change is a new chained stream. The
/// source stays connected through them all, a WebSocket listener sees every title from the
/// first, an ICY listener sees newer ones, and the stream decodes to the tone.
async fn liquidsoap_keeps_the_source_through_title_changes(codec: Codec) {
    let relay = TestRelay::start().await;
    let dir = WorkDir::new("liquidsoap");
    let mount = codec.mount("radio");
    let watch = Watch::websocket(&relay, "radio").await;
    let mut liquidsoap =
        liquidsoap(&dir, relay.addr, &mount, KEY, codec, 440, Duration::from_secs(2));
    wait_live(&relay, "radio", 10, &mut liquidsoap).await;
    let icy = Watch::icy(&relay, &mount).await;
    let url = format!("http://{}{mount}", relay.addr);
    let playback = play(Player::Ffmpeg, &url, 2.0).await;
    let what = format!("liquidsoap {codec:?}, decoded by ffmpeg");
    if codec == Codec::Vorbis {
        // A new chained link every 2 s: no dip where it begins (#15), but ffmpeg plays its
        // pre-roll, as it does from liquidsoap's own files (libvorbisfile plays them seamless).
        assert_tone_with_phase_jumps(&playback.pcm, 440.0, 2, &what);
    } else {
        assert_tone(&playback.pcm, 440.0, &what);
    }

    let titles: Vec<String> = (1..=4).map(liquidsoap_title).collect();
    watch.wait_titles(&titles, TITLES_WITHIN).await;
    // ICY blocks come every 16 000 bytes, which may span several titles: a newer one will do.
    poll_until(
        TITLES_WITHIN,
        || (icy.seen().titles.len() >= 2).then_some(()),
        || format!("ICY: {:?}", icy.seen()),
    )
    .await;
    let numbers = numbered(&icy.seen().titles, "Liquidsoap - Song ", "");
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "ICY titles {numbers:?}");
    liquidsoap.assert_running();
    let log = liquidsoap.output();
    assert_eq!(watch.seen().sources, [SourceState::Online], "the source dropped:\n{log}");
    assert_eq!(log.matches("Connection setup was successful").count(), 1, "reconnected:\n{log}");
    assert!(!log.contains("Error while sending data"), "{log}");
    drop(liquidsoap);
    relay.shutdown().await;
}

#[tokio::test]
async fn liquidsoap_opus_keeps_its_source_through_chained_title_changes() {
    // Regression: the relay closed the source at every title change ("empty Opus packet").
    liquidsoap_keeps_the_source_through_title_changes(Codec::Opus).await;
}

#[tokio::test]
async fn liquidsoap_vorbis_keeps_its_source_through_chained_title_changes() {
    liquidsoap_keeps_the_source_through_title_changes(Codec::Vorbis).await;
}

#[tokio::test]
async fn liquidsoap_mp3_titles_arrive_from_the_first_one() {
    // Regression: liquidsoap's first /admin/metadata came before the first MP3 frame and got 400.
    liquidsoap_keeps_the_source_through_title_changes(Codec::Mp3).await;
}

/// ezstream streams two tagged files once; listeners see both titles (the first included),
/// the stream decodes to the tone, and the source stays connected until ezstream is done.
async fn ezstream_plays_a_tagged_playlist(codec: Codec, plain: bool) {
    let dir = WorkDir::new("ezstream");
    let ext = if codec == Codec::Mp3 { "mp3" } else { "ogg" };
    let files = [
        tone_file(&dir, &format!("one.{ext}"), codec, 440, 4, "First Song", "Band A").await,
        tone_file(&dir, &format!("two.{ext}"), codec, 440, 4, "Second Song", "Band B").await,
    ];
    let relay = TestRelay::start().await;
    let mount = codec.mount("radio");
    let watch = Watch::websocket(&relay, "radio").await;
    let mut ezstream = ezstream(&dir, relay.addr, &mount, KEY, codec, &files, plain);
    wait_live(&relay, "radio", 10, &mut ezstream).await;
    let icy = Watch::icy(&relay, &mount).await;
    let titles = ["Band A - First Song".to_owned(), "Band B - Second Song".to_owned()];
    let url = format!("http://{}{mount}", relay.addr);
    let (playback, ()) =
        tokio::join!(play(Player::Ffmpeg, &url, 2.0), watch.wait_titles(&titles, TITLES_WITHIN));
    assert_tone(&playback.pcm, 440.0, &format!("ezstream {codec:?}, decoded by ffmpeg"));
    icy.wait_titles(&titles[1..], TITLES_WITHIN).await;
    let status = ezstream.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "ezstream: {status}\n{}", ezstream.output());
    poll_until(
        Duration::from_secs(5),
        || (watch.seen().sources.len() == 2).then_some(()),
        || format!("{:?}", watch.seen()),
    )
    .await;
    assert_eq!(watch.seen().sources, [SourceState::Online, SourceState::Offline]);
    relay.shutdown().await;
}

#[tokio::test]
async fn ezstream_mp3_playlist_titles_arrive_including_the_first() {
    // Regression: the first title (/admin/metadata right after connecting) was refused.
    // libshout's default TLS mode: it probes with `OPTIONS *` before each request.
    ezstream_plays_a_tagged_playlist(Codec::Mp3, false).await;
}

#[tokio::test]
async fn ezstream_ogg_vorbis_playlist_titles_arrive_from_the_files_tags() {
    ezstream_plays_a_tagged_playlist(Codec::Vorbis, true).await;
}

#[tokio::test]
async fn a_listener_hears_no_dropout_where_a_chained_vorbis_link_begins() {
    // Regression (#15): the relay spliced a new chained Vorbis link (same codec setup) into
    // the listener's one Ogg stream. The decoder overlapped the old link's last block with the
    // new link's priming block, and the old link's end trim (its EOS granule) was lost: 10-20
    // ms of near silence at every title change (liquidsoap %vorbis, ices2, ezstream Ogg). The
    // same files chained as they are decode with no dip. A new chained stream per source link
    // is not enough on its own: the trim must reach the listener too.
    let dir = WorkDir::new("chained-vorbis");
    // 2 s of 440 Hz is a whole number of cycles: the tone runs on across the files unbroken.
    let files = [
        tone_file(&dir, "one.ogg", Codec::Vorbis, 440, 2, "One", "Chain").await,
        tone_file(&dir, "two.ogg", Codec::Vorbis, 440, 2, "Two", "Chain").await,
    ];
    let relay = TestRelay::start().await;
    let watch = Watch::websocket(&relay, "radio").await;
    let mut ezstream = ezstream(&dir, relay.addr, "/radio.ogg", KEY, Codec::Vorbis, &files, true);
    wait_live(&relay, "radio", 1, &mut ezstream).await;
    // The burst starts the listener at the source's first frame: its 3.5 s span the boundary.
    let url = format!("http://{}/radio.ogg", relay.addr);
    let playback = play(Player::Ffmpeg, &url, 3.5).await;
    watch.wait_titles(&["Chain - One".to_owned(), "Chain - Two".to_owned()], TITLES_WITHIN).await;
    assert_tone(&playback.pcm, 440.0, "two chained Vorbis links");
    relay.shutdown().await;
}

#[tokio::test]
async fn ices2_vorbis_titles_arrive_as_chained_streams_and_the_source_stays() {
    let relay = TestRelay::start().await;
    let dir = WorkDir::new("ices2");
    let watch = Watch::websocket(&relay, "radio").await;
    let mut ices = Ices::start(&dir, relay.addr, "/radio.ogg", KEY, 440);
    wait_live(&relay, "radio", 10, &mut ices.ices).await;
    let icy = Watch::icy(&relay, "/radio.ogg").await;
    for n in 1..=3 {
        ices.set_title("Ices", &format!("Take {n}"));
        let title = format!("Ices - Take {n}");
        watch.wait_titles(std::slice::from_ref(&title), TITLES_WITHIN).await;
    }
    icy.wait_titles(&["Ices - Take 3".to_owned()], TITLES_WITHIN).await;
    let url = format!("http://{}/radio.ogg", relay.addr);
    let playback = play(Player::Ffmpeg, &url, 2.0).await;
    // The burst may reach back to where the last link began: no dip there (#15), but ffmpeg
    // may play samples there that libvorbisfile does not (see `assert_tone_with_phase_jumps`).
    assert_tone_with_phase_jumps(&playback.pcm, 440.0, 1, "ices2 Vorbis, decoded by ffmpeg");
    ices.ices.assert_running();
    assert_eq!(watch.seen().sources, [SourceState::Online], "{}", ices.ices.output());
    drop(ices);
    relay.shutdown().await;
}

#[tokio::test]
async fn darkice_pushes_opus_vorbis_and_mp3_from_an_alsa_capture_device() {
    // One capture device (a FIFO fed with a tone), three encoders, three mounts.
    let relay =
        TestRelay::start_with(config(&[("opus", KEY), ("vorbis", KEY), ("mp3", KEY)])).await;
    let dir = WorkDir::new("darkice");
    let outputs =
        [(Codec::Opus, "/opus.ogg"), (Codec::Vorbis, "/vorbis.ogg"), (Codec::Mp3, "/mp3.mp3")];
    let mut darkice = Darkice::start(&dir, relay.addr, KEY, &outputs, 440);
    for stream in ["opus", "vorbis", "mp3"] {
        wait_live(&relay, stream, 10, &mut darkice.darkice).await;
    }
    let (_, status) = http_get(&relay, "/status-json.xsl").await;
    assert_eq!(status.matches("\"server_name\":\"darkice test\"").count(), 3, "{status}");
    let check = |codec: Codec, mount: &'static str| {
        let url = format!("http://{}{mount}", relay.addr);
        async move {
            let playback = play(Player::Ffmpeg, &url, 2.0).await;
            assert_tone(&playback.pcm, 440.0, &format!("darkice {codec:?}, decoded by ffmpeg"));
        }
    };
    tokio::join!(
        check(Codec::Opus, "/opus.ogg"),
        check(Codec::Vorbis, "/vorbis.ogg"),
        check(Codec::Mp3, "/mp3.mp3")
    );
    darkice.darkice.assert_running();
    drop(darkice);
    relay.shutdown().await;
}

/// `player` joins `/radio.ogg` (Opus, 440 Hz) and `/hits.mp3` (MP3, 1 kHz) two seconds into
/// the stream, decodes 4 s of each without an error and hears the right tone. The title changes
/// every 700 ms meanwhile, faster than ICY blocks come (16 000 bytes, about a second): the
/// player must report at least two titles, each a newer one, accents intact.
async fn player_decodes_ogg_and_mp3_joined_mid_stream(player: Player) {
    let relay = TestRelay::start_with(config(&[("radio", KEY), ("hits", KEY)])).await;
    let dir = WorkDir::new("player-sources");
    let mut opus = ffmpeg_source(&dir, relay.addr, "/radio.ogg", KEY, Codec::Opus, 440);
    let mut mp3 = ffmpeg_source(&dir, relay.addr, "/hits.mp3", KEY, Codec::Mp3, 1000);
    wait_live(&relay, "radio", 100, &mut opus).await;
    wait_live(&relay, "hits", 77, &mut mp3).await;
    let listen = |stream: &'static str, mount: &'static str, freq: f64| {
        let relay = &relay;
        async move {
            let url = format!("http://{}{mount}", relay.addr);
            let playing = play(player, &url, 4.0);
            tokio::pin!(playing);
            let mut n = 0;
            let playback = loop {
                n += 1;
                set_title(relay, mount, KEY, &format!("{stream} {n} – ça marche")).await;
                // The pace of the title changes, not a wait for something to happen.
                tokio::select! {
                    playback = &mut playing => break playback,
                    () = tokio::time::sleep(Duration::from_millis(700)) => {}
                }
            };
            assert_tone(&playback.pcm, freq, &format!("{player:?} on {mount}"));
            let numbers = numbered(&playback.titles, &format!("{stream} "), " – ça marche");
            assert!(
                numbers.len() >= 2 && numbers.windows(2).all(|w| w[0] < w[1]),
                "{player:?} on {mount}: titles {:?}",
                playback.titles
            );
        }
    };
    tokio::join!(listen("radio", "/radio.ogg", 440.0), listen("hits", "/hits.mp3", 1000.0));
    opus.assert_running();
    mp3.assert_running();
    relay.shutdown().await;
}

#[tokio::test]
async fn ffmpeg_decodes_ogg_and_mp3_joined_mid_stream_with_icy_titles() {
    player_decodes_ogg_and_mp3_joined_mid_stream(Player::Ffmpeg).await;
}

#[tokio::test]
async fn mpv_decodes_ogg_and_mp3_joined_mid_stream_with_icy_titles() {
    player_decodes_ogg_and_mp3_joined_mid_stream(Player::Mpv).await;
}

#[tokio::test]
async fn vlc_decodes_ogg_and_mp3_joined_mid_stream_with_icy_titles() {
    player_decodes_ogg_and_mp3_joined_mid_stream(Player::Vlc).await;
}

#[tokio::test]
async fn gstreamer_playbin_decodes_ogg_and_mp3_joined_mid_stream_with_icy_titles() {
    player_decodes_ogg_and_mp3_joined_mid_stream(Player::GstPlaybin).await;
}

#[tokio::test]
async fn gstreamer_uridecodebin_decodes_ogg_and_mp3_joined_mid_stream_with_icy_titles() {
    player_decodes_ogg_and_mp3_joined_mid_stream(Player::GstUridecodebin).await;
}

/// A live source taking over from the auto-DJ is a new chained Ogg stream (a new link, after
/// an EOS page): each player plays on from the auto-DJ's 440 Hz into the live source's 1 kHz,
/// without a decode error and without stopping.
#[cfg(feature = "source")]
async fn player_hears_a_source_switch_as_a_new_chained_stream(player: Player) {
    let mut config = config(&[]);
    let mut stream = onair::StreamConfig::new("radio", Some(KEY));
    stream.playlist = Some(sample("tone-440.flac"));
    config.streams.push(stream);
    let relay = TestRelay::start_with(config).await;
    within_secs(15, async {
        while stream_info(&relay, "radio").await["source"] != "autodj" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let url = format!("http://{}/radio.ogg", relay.addr);
    let playing = play(player, &url, 7.0);
    tokio::pin!(playing);
    let dir = WorkDir::new("switch-source");
    // The pace of the switch (2 s into the playback), not a wait for something to happen.
    let mut live = tokio::select! {
        playback = &mut playing => panic!("{player:?} ended early: {}", playback.log),
        () = tokio::time::sleep(Duration::from_secs(2)) => {
            ffmpeg_source(&dir, relay.addr, "/radio.ogg", KEY, Codec::Opus, 1000)
        }
    };
    let playback = playing.await;
    live.assert_running();
    let heard = playback.pcm.frequencies(0.25);
    let near = |f: f64, want: f64| (f - want).abs() < 20.0;
    let first_live = heard.iter().position(|&f| near(f, 1000.0));
    let first_live =
        first_live.unwrap_or_else(|| panic!("{player:?} never heard 1 kHz: {heard:?}"));
    assert!(first_live >= 2, "{player:?} heard the auto-DJ first: {heard:?}");
    assert!(heard[..first_live - 1].iter().all(|&f| near(f, 440.0)), "{player:?}: {heard:?}");
    assert!(
        heard[first_live + 1..].iter().all(|&f| near(f, 1000.0)),
        "{player:?} plays on after the switch: {heard:?}"
    );
    relay.shutdown().await;
}

#[cfg(feature = "source")]
#[tokio::test]
async fn ffmpeg_hears_a_source_switch_as_a_new_chained_stream() {
    player_hears_a_source_switch_as_a_new_chained_stream(Player::Ffmpeg).await;
}

#[cfg(feature = "source")]
#[tokio::test]
async fn mpv_hears_a_source_switch_as_a_new_chained_stream() {
    player_hears_a_source_switch_as_a_new_chained_stream(Player::Mpv).await;
}

#[cfg(feature = "source")]
#[tokio::test]
async fn vlc_hears_a_source_switch_as_a_new_chained_stream() {
    player_hears_a_source_switch_as_a_new_chained_stream(Player::Vlc).await;
}

#[cfg(feature = "source")]
#[tokio::test]
async fn gstreamer_hears_a_source_switch_as_a_new_chained_stream() {
    player_hears_a_source_switch_as_a_new_chained_stream(Player::GstPlaybin).await;
}
