use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::StreamConfig;
use crate::metrics::StreamMetrics;
use crate::protocol::{
    encode_frame, Codec, FrameHeader, ListenerEvent, Metadata, Track, TrackKind, FLAG_HEADER,
    FLAG_KEYFRAME,
};

fn audio() -> Vec<Track> {
    vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]
}

fn stream(ring_frames: usize, burst_ms: u64) -> Arc<Stream> {
    let mut config = StreamConfig::new("test", Some("k"));
    config.ring_frames = ring_frames;
    config.burst = Duration::from_millis(burst_ms);
    Stream::new(config, StreamMetrics::default())
}

fn push(source: &mut SourceHandle, flags: u8, track: u8, pts: u64, body: &[u8]) {
    let header = FrameHeader { flags, track, pts };
    source.frame(header, encode_frame(header, body)).unwrap();
}

/// Events as JSON values (what a WebSocket listener reads) and frames as their pts, in order.
fn drain(consumer: &mut Consumer) -> (Vec<serde_json::Value>, Vec<u64>, Fill) {
    let mut out = VecDeque::new();
    let fill = consumer.fill(&mut out, usize::MAX);
    let (mut events, mut frames) = (Vec::new(), Vec::new());
    for item in out {
        match item {
            Item::Frame(frame) => frames.push(frame.header().pts),
            Item::Event(event) => events.push(json(event.wire().payload())),
        }
    }
    (events, frames, fill)
}

fn json(text: &[u8]) -> serde_json::Value {
    serde_json::from_slice(text).unwrap()
}

#[test]
fn a_title_set_before_the_first_frame_goes_on_air_with_the_source() {
    // Regression: ezstream's and liquidsoap's first title (an `/admin/metadata` request right
    // after connecting, before the first MP3 frame) was refused with 400.
    let stream = stream(1000, 100);
    assert!(!stream.set_metadata(Metadata::default()), "no source at all");
    let (mut consumer, _) = stream.subscribe().unwrap();
    let mut source = stream.attach(SourceKind::Live).unwrap();
    let title = Metadata { title: Some("First".into()), ..Metadata::default() };
    assert!(stream.set_metadata(title.clone()), "kept for the connected source");
    assert!(drain(&mut consumer).0.is_empty(), "not on air yet");
    source.start(audio()).unwrap();
    let (events, _, _) = drain(&mut consumer);
    assert_eq!(events[0]["state"], "online");
    assert_eq!(events[1]["type"], "metadata");
    assert_eq!(events[1]["title"], "First");
    assert_eq!(stream.metadata(), Some(title));
    drop(source);
    assert!(!stream.set_metadata(Metadata::default()), "gone again");
}

#[test]
fn late_joiner_gets_hello_header_and_a_burst_cut_on_frames() {
    let stream = stream(1000, 100);
    let mut source = stream.attach(SourceKind::Live).unwrap();
    source.start(audio()).unwrap();
    push(&mut source, FLAG_HEADER, 0, 0, b"OpusHead");
    for i in 0..50 {
        push(&mut source, FLAG_KEYFRAME, 0, i * 20_000, b"x");
    }
    source.metadata(Metadata { title: Some("Song".into()), ..Metadata::default() }).unwrap();

    let (mut consumer, first) = stream.subscribe().unwrap();
    let hello = json(first[0].wire().payload());
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["live"], true);
    assert_eq!(hello["metadata"]["title"], "Song");
    assert_eq!(first.len(), 2, "hello then the stored header");
    let Item::Frame(head) = &first[1] else { panic!("a header frame") };
    assert_eq!(&head.payload()[..], b"OpusHead");

    let (events, frames, fill) = drain(&mut consumer);
    assert!(events.is_empty(), "metadata already in hello: {events:?}");
    // newest pts 980 ms, burst 100 ms: start at the newest frame at or before 880 ms
    assert_eq!(frames, (44..50).map(|i| i * 20_000).collect::<Vec<_>>());
    assert!(fill.at_head);

    push(&mut source, FLAG_KEYFRAME, 0, 1_000_000, b"live");
    let (_, frames, _) = drain(&mut consumer);
    assert_eq!(frames, vec![1_000_000]);
}

#[test]
fn lagging_consumer_jumps_ahead_and_is_told_exactly_how_far() {
    let stream = stream(10, 0);
    let mut source = stream.attach(SourceKind::Live).unwrap();
    source.start(audio()).unwrap();
    let (mut consumer, _) = stream.subscribe().unwrap();
    push(&mut source, FLAG_KEYFRAME, 0, 0, b"a");
    let (_, frames, _) = drain(&mut consumer);
    assert_eq!(frames, vec![0]);
    for i in 1..=25 {
        push(&mut source, FLAG_KEYFRAME, 0, i * 20_000, b"b");
    }
    source.metadata(Metadata { title: Some("New".into()), ..Metadata::default() }).unwrap();
    let (events, frames, fill) = drain(&mut consumer);
    // burst 0: resume at the newest frame (25); frames 1..=24 were never sent
    assert_eq!(fill.skipped, 24);
    assert_eq!(events[0], serde_json::json!({"type": "skipped", "frames": 24}));
    assert_eq!(events[1]["title"], "New", "changed metadata is resent after a skip");
    assert_eq!(frames, vec![25 * 20_000]);
    assert_eq!(events.len(), 2);
}

#[test]
fn video_streams_start_only_at_video_keyframes() {
    let stream = stream(1000, 0);
    let mut source = stream.attach(SourceKind::Live).unwrap();
    let mut tracks = audio();
    tracks.push(Track {
        id: 1,
        kind: TrackKind::Video,
        codec: Codec::Vp8,
        sample_rate: None,
        channels: None,
        width: Some(640),
        height: Some(480),
        bitrate: None,
    });
    source.start(tracks).unwrap();
    push(&mut source, FLAG_KEYFRAME, 1, 0, b"key");
    push(&mut source, FLAG_KEYFRAME, 0, 10_000, b"audio");
    push(&mut source, 0, 1, 33_000, b"delta");
    push(&mut source, FLAG_KEYFRAME, 0, 30_000, b"audio");
    let (mut consumer, _) = stream.subscribe().unwrap();
    let (_, frames, _) = drain(&mut consumer);
    assert_eq!(frames, vec![0, 10_000, 33_000, 30_000], "from the video keyframe on");
}

#[test]
fn bad_source_input_is_refused() {
    let stream = stream(10, 0);
    let mut source = stream.attach(SourceKind::Live).unwrap();
    let header = FrameHeader { flags: 0, track: 0, pts: 0 };
    assert_eq!(source.frame(header, encode_frame(header, b"")), Err(SourceError::NotStarted));
    source.start(audio()).unwrap();
    assert_eq!(source.start(audio()), Err(SourceError::AlreadyStarted));
    let header = FrameHeader { flags: 0, track: 9, pts: 0 };
    assert_eq!(source.frame(header, encode_frame(header, b"")), Err(SourceError::UnknownTrack(9)));
    assert_eq!(stream.attach(SourceKind::Live).unwrap_err(), AttachError::Busy);
}

#[test]
fn listener_limit_is_enforced_and_freed_on_drop() {
    let mut config = StreamConfig::new("test", Some("k"));
    config.max_listeners = 2;
    let stream = Stream::new(config, StreamMetrics::default());
    let a = stream.subscribe().unwrap();
    let _b = stream.subscribe().unwrap();
    assert_eq!(stream.subscribe().unwrap_err(), StreamFull(2));
    drop(a);
    assert!(stream.subscribe().is_ok());
    assert_eq!(stream.listener_count(), 1);
}

#[test]
fn source_disconnect_and_resume_keep_the_consumer() {
    let stream = stream(100, 0);
    let (mut consumer, first) = stream.subscribe().unwrap();
    let hello = json(first[0].wire().payload());
    assert_eq!(hello["live"], false);
    let mut source = stream.attach(SourceKind::Live).unwrap();
    source.start(audio()).unwrap();
    push(&mut source, FLAG_KEYFRAME, 0, 0, b"a");
    drop(source);
    let (events, frames, _) = drain(&mut consumer);
    assert_eq!(events[0]["state"], "online");
    assert_eq!(events[0]["tracks"][0]["codec"], "opus");
    assert_eq!(events[1], serde_json::json!({"type": "source", "state": "offline"}));
    assert_eq!(frames, vec![0]);
    let mut again = stream.attach(SourceKind::Live).unwrap();
    again.start(audio()).unwrap();
    push(&mut again, FLAG_KEYFRAME, 0, 5, b"b");
    let (events, frames, _) = drain(&mut consumer);
    assert_eq!(events[0]["state"], "online");
    assert_eq!(frames, vec![5]);
}

#[test]
fn live_source_takes_over_from_the_autodj_and_hands_back() {
    let stream = stream(1000, 0);
    let mut dj = stream.attach(SourceKind::AutoDj).unwrap();
    dj.start(audio()).unwrap();
    push(&mut dj, FLAG_HEADER, 0, 0, b"dj-head");
    dj.metadata(Metadata { title: Some("Auto".into()), ..Metadata::default() }).unwrap();
    push(&mut dj, FLAG_KEYFRAME, 0, 0, b"dj");
    let (mut consumer, _) = stream.subscribe().unwrap();
    drain(&mut consumer);

    let mut live = stream.attach(SourceKind::Live).unwrap();
    push(&mut dj, FLAG_KEYFRAME, 0, 20_000, b"dj");
    live.start(audio()).unwrap();
    push(&mut dj, FLAG_KEYFRAME, 0, 40_000, b"dj muted");
    push(&mut live, FLAG_HEADER, 0, 0, b"live-head");
    push(&mut live, FLAG_KEYFRAME, 0, 7, b"live");
    let (events, frames, _) = drain(&mut consumer);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["state"], "online");
    assert_eq!(frames, vec![20_000, 0, 7], "dj frame, then live header and frame");
    assert_eq!(stream.info().source, Some("live"));

    drop(live);
    push(&mut dj, FLAG_KEYFRAME, 0, 60_000, b"dj");
    let (events, frames, _) = drain(&mut consumer);
    assert_eq!(events[0]["state"], "online");
    assert_eq!(events[1]["title"], "Auto", "the auto-DJ's title comes back");
    assert_eq!(frames, vec![0, 60_000], "its header again, then its frames");
    assert_eq!(stream.info().source, Some("autodj"));
    assert!(stream.is_live());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push { keyframe: bool, bytes: usize },
        Read { consumer: usize, max_bytes: usize },
        Metadata,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), 1usize..200).prop_map(|(keyframe, bytes)| Op::Push { keyframe, bytes }),
            3 => (0usize..3, 1usize..600).prop_map(|(consumer, max_bytes)| Op::Read { consumer, max_bytes }),
            1 => Just(Op::Metadata),
        ]
    }

    proptest! {
        // Failing cases are kept beside this file (tests.regressions), not in a folder at the
        // top of the repository.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
            )),
            ..ProptestConfig::default()
        })]
        /// Any interleaving of pushes and reads keeps order, never yields a frame twice, and
        /// reports exactly the frames a consumer never got.
        #[test]
        fn consumers_see_ordered_unique_frames_and_exact_skip_counts(ops in prop::collection::vec(op(), 1..400)) {
            let mut config = StreamConfig::new("prop", Some("k"));
            config.ring_frames = 8;
            config.ring_bytes = 1024;
            config.burst = Duration::ZERO;
            let stream = Stream::new(config, StreamMetrics::default());
            let mut source = stream.attach(SourceKind::Live).expect("free");
            source.start(vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]).expect("first start");
            // Consumers join before the first frame, so every frame is theirs to get or skip.
            let mut consumers: Vec<(Consumer, u64)> =
                (0..3).map(|_| (stream.subscribe().expect("room").0, 0)).collect();
            let mut pushed = 0u64;
            for op in ops {
                match op {
                    Op::Push { keyframe, bytes } => {
                        let header = FrameHeader { flags: if keyframe { FLAG_KEYFRAME } else { 0 }, track: 0, pts: pushed };
                        let mut body = pushed.to_be_bytes().to_vec();
                        body.resize(bytes.max(8), 0);
                        source.frame(header, encode_frame(header, &body)).expect("declared track");
                        pushed += 1;
                    }
                    Op::Metadata => source.metadata(Metadata::default()).expect("started"),
                    Op::Read { consumer, max_bytes } => {
                        let (consumer, expected) = &mut consumers[consumer];
                        let mut out = VecDeque::new();
                        let fill = consumer.fill(&mut out, max_bytes);
                        let mut skipped_seen = 0;
                        let mut frames = 0;
                        for item in out {
                            let frame = match item {
                                Item::Event(event) => {
                                    if let ListenerEvent::Skipped { frames } = event.get() {
                                        skipped_seen += frames;
                                    }
                                    continue;
                                }
                                Item::Frame(frame) => frame,
                            };
                            let mut n = [0u8; 8];
                            n.copy_from_slice(&frame.payload()[..8]);
                            let number = u64::from_be_bytes(n);
                            let want = *expected + std::mem::take(&mut skipped_seen);
                            prop_assert_eq!(number, want, "in order, no duplicates, exact skip");
                            *expected = number + 1;
                            frames += 1;
                        }
                        prop_assert_eq!(fill.frames, frames);
                        // A skip reported with nothing after it yet: the gap is still owed.
                        *expected += skipped_seen;
                        prop_assert!(*expected <= pushed);
                        if fill.at_head {
                            prop_assert_eq!(*expected, pushed, "at the head means nothing left");
                        }
                    }
                }
            }
        }
    }
}

/// A hand-back to the auto-DJ must reach listeners as one unit: `source online`, the
/// auto-DJ's header, its now playing, and only then frames. They used to go into the ring
/// under separate lock acquisitions, so an auto-DJ frame pushed from its own thread could land
/// between `online` and the header; an Ogg listener then started a stream with a synthesized
/// header and at once another one.
#[test]
fn a_source_switch_is_never_split_by_a_frame() {
    let stream = stream(1_000_000, 0);
    let mut dj = stream.attach(SourceKind::AutoDj).unwrap();
    dj.start(audio()).unwrap();
    push(&mut dj, FLAG_HEADER, 0, 0, b"dj-head");
    dj.metadata(Metadata { title: Some("Auto".into()), ..Metadata::default() }).unwrap();
    let (mut consumer, _) = stream.subscribe().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut pts = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                pts += 1;
                push(&mut dj, FLAG_KEYFRAME, 0, pts, b"dj");
            }
        })
    };
    let live_tracks = vec![Track::audio(0, Codec::Opus, 44_100, 1, None)];
    let mut hand_backs = 0;
    for round in 0..3000 {
        let mut live = stream.attach(SourceKind::Live).unwrap();
        live.start(live_tracks.clone()).unwrap();
        drop(live);
        let mut out = VecDeque::new();
        while !consumer.fill(&mut out, usize::MAX).at_head {}
        let items: Vec<Item> = out.into_iter().collect();
        for (at, item) in items.iter().enumerate() {
            let Item::Event(event) = item else { continue };
            let ListenerEvent::Source { tracks: Some(tracks), .. } = event.get() else { continue };
            if *tracks != audio() {
                continue;
            }
            let header =
                matches!(items.get(at + 1), Some(Item::Frame(f)) if f.header().is_header());
            let title = matches!(items.get(at + 2), Some(Item::Event(e)) if matches!(e.get(), ListenerEvent::Metadata(_)));
            assert!(
                header && title,
                "round {round}: the hand-back was split: {:?}",
                &items[at..(at + 3).min(items.len())]
            );
            hand_backs += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pusher.join().unwrap();
    assert_eq!(hand_backs, 3000);
}

/// Header frames were kept outside `ring_bytes`: what a stream held could exceed its budget
/// by every track's header.
#[test]
fn stored_headers_count_against_ring_bytes() {
    let mut config = StreamConfig::new("test", Some("k"));
    config.ring_bytes = 2_000;
    let stream = Stream::new(config, StreamMetrics::default());
    let mut source = stream.attach(SourceKind::Live).unwrap();
    source.start(audio()).unwrap();
    push(&mut source, FLAG_HEADER, 0, 0, &[7u8; 400]);
    for i in 0..100 {
        push(&mut source, FLAG_KEYFRAME, 0, i * 20_000, &[1u8; 100]);
    }
    let (ring, headers) = {
        let state = stream.lock();
        let headers: usize = state.on_air.headers.iter().map(|(_, f)| f.wire().wire_len()).sum();
        (state.ring.len_and_bytes().1, headers)
    };
    assert_eq!(headers, 414, "the header is stored (4 bytes of WebSocket header, 410 of frame)");
    assert!(ring + headers <= 2_000, "ring {ring} + headers {headers} over ring_bytes");
}

/// Each metadata message became a ring entry and woke every listener.
#[tokio::test(start_paused = true)]
async fn now_playing_bursts_wait_for_the_interval_and_the_latest_wins() {
    let stream = stream(1000, 0);
    let mut source = stream.attach(SourceKind::Live).unwrap();
    source.start(audio()).unwrap();
    let (mut consumer, _) = stream.subscribe().unwrap();
    let title = |t: &str| Metadata { title: Some(t.into()), ..Metadata::default() };
    for i in 0..100 {
        source.metadata(title(&format!("t{i}"))).unwrap();
    }
    push(&mut source, FLAG_KEYFRAME, 0, 0, b"x");
    let titles = |events: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        events.iter().filter(|e| e["type"] == "metadata").map(|e| e["title"].clone()).collect()
    };
    let (events, _, _) = drain(&mut consumer);
    assert_eq!(titles(events), vec![serde_json::json!("t0")], "the first goes at once");
    tokio::time::advance(METADATA_INTERVAL / 2).await;
    push(&mut source, FLAG_KEYFRAME, 0, 20_000, b"x");
    let (events, frames, _) = drain(&mut consumer);
    assert!(titles(events).is_empty(), "held within the interval");
    assert_eq!(frames, vec![20_000]);
    assert_eq!(stream.info().metadata, Some(title("t0")), "now playing is what listeners got");
    tokio::time::advance(METADATA_INTERVAL / 2).await;
    push(&mut source, FLAG_KEYFRAME, 0, 40_000, b"x");
    let (events, frames, _) = drain(&mut consumer);
    assert_eq!(titles(events), vec![serde_json::json!("t99")], "then the latest, before the frame");
    assert_eq!(frames, vec![40_000]);
    // With no frame coming, the held title goes when the interval ends.
    source.metadata(title("paused")).unwrap();
    assert!(titles(drain(&mut consumer).0).is_empty());
    tokio::time::advance(METADATA_INTERVAL).await;
    assert_eq!(titles(drain(&mut consumer).0), vec![serde_json::json!("paused")]);
    // A new source starts afresh: what the old one held back is dropped, and its own first
    // title goes out at once.
    source.metadata(title("held")).unwrap();
    drop(source);
    let mut again = stream.attach(SourceKind::Live).unwrap();
    again.start(audio()).unwrap();
    again.metadata(title("new show")).unwrap();
    tokio::time::advance(METADATA_INTERVAL).await;
    push(&mut again, FLAG_KEYFRAME, 0, 0, b"x");
    let (events, _, _) = drain(&mut consumer);
    assert_eq!(titles(events), vec![serde_json::json!("new show")]);
}

#[test]
fn a_source_links_edge_rides_on_its_frame_and_ends_the_http_link() {
    // Regression (#15): where an Icecast source's chained link ended never left the demuxer,
    // so HTTP listeners and recordings spliced the links (see `format::mux`).
    use crate::format::mux::Rendition;
    use crate::format::LinkEdge;
    let stream = stream(1000, 10_000);
    let mut source = stream.attach(SourceKind::Live).unwrap();
    source.start(audio()).unwrap();
    let edges = [None, Some(LinkEdge::Last { trim: 100 }), None];
    for (i, edge) in edges.into_iter().enumerate() {
        let header = FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts: i as u64 * 20_000 };
        source.frame_at_edge(header, encode_frame(header, &[0xFC, 1]), edge).unwrap();
    }
    let (mut consumer, _) = stream.subscribe().unwrap();
    let mut items: VecDeque<Item> = VecDeque::new();
    consumer.fill(&mut items, usize::MAX);
    let frames: Vec<&Frame> = items
        .iter()
        .filter_map(|item| match item {
            Item::Frame(frame) => Some(frame),
            Item::Event(_) => None,
        })
        .collect();
    assert_eq!(frames.iter().map(|f| f.edge()).collect::<Vec<_>>(), edges, "the recorder's view");
    let chains: Vec<(u64, u8, u64)> = frames
        .iter()
        .map(|f| match f.http() {
            Some(Rendition::Ogg { head, chain, .. }) => {
                let granule = u64::from_le_bytes(head[6..14].try_into().unwrap());
                (chain.id(), head[5], granule)
            }
            other => panic!("not an Ogg page: {other:?}"),
        })
        .collect();
    let eos = crate::format::ogg::FLAG_EOS;
    assert_eq!(chains, [(1, 0, 960), (1, eos, 1920 - 100), (2, 0, 960)]);
}
