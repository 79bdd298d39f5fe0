//! Properties of the verdict with the HTTP/1 lens's framing (issue 11), over arbitrary facts
//! and policies, and over the lens fed arbitrary splits of real requests:
//! * a complete request (stage `server`) is never cut by a client timer, whatever the server's
//!   calls say (an event loop's epoll read interest, a sticky EAGAIN);
//! * `deadline` is exactly where `judge` turns, in every stage;
//! * a connection the lens does not follow (`Detect`, `Off`) is judged as without a lens;
//! * however a complete request is split into reads, the lens ends in `server`, so the verdict
//!   never cuts it; and bytes that are not HTTP never give a framing.

use proptest::prelude::*;
use stallguard_lens::Lens;
use stallguard_policy::{
    deadline, judge, Facts, Framing, Reason, RequestPolicy, Stage, Timers, Verdict,
};

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        Just(Stage::Detect),
        Just(Stage::Headers),
        Just(Stage::Body),
        Just(Stage::Server),
        Just(Stage::Response),
        Just(Stage::Idle),
        Just(Stage::Tunnel),
        Just(Stage::Off),
    ]
}

/// A time: 0 ("never") or within a day of the test's epoch.
fn at() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1_000_000u64..1_000_000 + 86_400_000]
}

fn rate_timer() -> impl Strategy<Value = Option<RequestPolicy>> {
    prop_oneof![
        Just(None),
        (1u64..60_000, 0u64..120_000, 0u64..10_000).prop_map(|(t, extra, rate)| Some(
            RequestPolicy {
                timeout_ms: t,
                max_ms: t + extra,
                min_rate: rate,
            }
        )),
    ]
}

fn timers() -> impl Strategy<Value = Timers> {
    (
        0u64..60_000,
        rate_timer(),
        rate_timer(),
        0u64..120_000,
        0u64..120_000,
    )
        .prop_map(
            |(first_byte_ms, request, body, idle_ms, write_stall_ms)| Timers {
                first_byte_ms,
                request,
                body,
                idle_ms,
                write_stall_ms,
                lifetime_ms: 0,
                ..Timers::default()
            },
        )
}

fn facts() -> impl Strategy<Value = Facts> {
    (
        (at(), at(), at(), at(), at()),
        (0u64..100_000, at(), 0u64..100_000, at()),
        (stage(), at(), 0u64..100_000, 0u32..10),
    )
        .prop_map(
            |(
                (accepted_at, first_wait_at, waiting_since, last_in, last_out),
                (bytes_in, request_start, request_bytes, write_pending_since),
                (stage, since, bytes, requests),
            )| Facts {
                accepted_at,
                first_wait_at,
                waiting_since,
                last_in,
                last_out,
                bytes_in,
                request_start,
                request_bytes,
                write_pending_since,
                framing: Some(Framing {
                    stage,
                    since,
                    bytes,
                    requests,
                }),
                ..Facts::default()
            },
        )
}

fn client_turn(v: Verdict) -> bool {
    matches!(v, Verdict::Stalled { reason, .. } if reason.is_client_turn())
}

proptest! {
    #[test]
    fn a_complete_request_is_never_cut_by_a_client_timer(
        f in facts(), t in timers(), later in 0u64..7 * 86_400_000
    ) {
        let f = Facts {
            framing: f.framing.map(|fr| Framing { stage: Stage::Server, ..fr }),
            ..f
        };
        let v = judge(&f, &t, 1_000_000 + later);
        prop_assert!(!client_turn(v), "{f:?} {t:?} → {v:?}");
    }

    #[test]
    fn deadline_is_where_judge_turns_in_every_stage(f in facts(), t in timers()) {
        if let Some(d) = deadline(&f, &t) {
            prop_assume!(d > 0);
            prop_assert_eq!(judge(&f, &t, d - 1), Verdict::Healthy, "{:?}", f);
            prop_assert_ne!(judge(&f, &t, d), Verdict::Healthy, "{:?}", f);
        } else {
            prop_assert_eq!(judge(&f, &t, u64::MAX / 2), Verdict::Healthy);
        }
    }

    #[test]
    fn no_framing_knowledge_means_the_rules_without_a_lens(
        f in facts(), t in timers(), now in at(), off in any::<bool>()
    ) {
        let unknown = Facts {
            framing: f.framing.map(|fr| Framing {
                stage: if off { Stage::Off } else { Stage::Detect },
                ..fr
            }),
            ..f
        };
        let blind = Facts { framing: None, ..f };
        prop_assert_eq!(judge(&unknown, &t, now), judge(&blind, &t, now));
        prop_assert_eq!(deadline(&unknown, &t), deadline(&blind, &t));
    }

    #[test]
    fn however_a_complete_request_is_split_the_lens_hands_the_turn_to_the_server(
        which in 0usize..4, cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)
    ) {
        let requests: [&[u8]; 4] = [
            b"GET /wait?ms=90000 HTTP/1.1\r\nHost: t\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ];
        let req = requests[which];
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(req.len() + 1)).collect();
        points.push(0);
        points.push(req.len());
        points.sort_unstable();
        let mut lens = Lens::new();
        for w in points.windows(2) {
            lens.feed(&req[w[0]..w[1]]);
        }
        prop_assert_eq!(lens.stage(), Stage::Server);
        let f = Facts {
            first_wait_at: 1_000_000,
            waiting_since: 1_000_000, // an event loop: the fd stays in the read set
            bytes_in: req.len() as u64,
            request_start: 1_000_000,
            request_bytes: req.len() as u64,
            framing: Some(Framing { stage: lens.stage(), since: 1_000_000, bytes: 0, requests: 1 }),
            ..Facts::default()
        };
        prop_assert_eq!(judge(&f, &Timers::default(), 1_000_000 + 3_600_000), Verdict::Healthy);
    }

    #[test]
    fn bytes_that_are_not_http_never_give_a_framing(
        first in any::<u8>().prop_filter("not a token byte", |b| !b.is_ascii_alphanumeric()
            && !b"!#$%&'*+-.^_`|~\r\n".contains(b)),
        rest in proptest::collection::vec(any::<u8>(), 0..64)
    ) {
        let mut lens = Lens::new();
        lens.feed(&[first]);
        lens.feed(&rest);
        prop_assert!(!lens.stage().is_framed(), "{:?}", lens.stage());
    }
}

#[test]
fn reasons_that_charge_the_client() {
    assert!(Reason::Request.is_client_turn());
    assert!(!Reason::WriteStall.is_client_turn());
}
