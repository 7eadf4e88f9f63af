//! The invocation state machine on chosen and random journals, in memory
//! (`taskwire_restate::testing`): replay, divergence, protocol violations, cancellation,
//! lazy state, and the rule that every attempt ends with exactly one of End, Suspension or
//! Error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use taskwire_restate::protocol::{
    self, InputCommandMessage, RunCommandMessage, RunCompletionNotificationMessage,
    SignalNotificationMessage, SleepCommandMessage, SleepCompletionNotificationMessage,
    StartMessage,
};
use taskwire_restate::testing::invoke;
use taskwire_restate::{
    Context, Endpoint, Frame, HandlerResult, JOURNAL_MISMATCH, Json, Message, MessageType,
    ObjectContext, PROTOCOL_VIOLATION, Service, VirtualObject,
};

fn value(json: &str) -> protocol::Value {
    protocol::Value {
        content: Bytes::copy_from_slice(json.as_bytes()),
    }
}

/// `Start` announcing `known` stored entries: every entry after it, the input included.
fn start(known: u32) -> Frame {
    Frame::new(&Message::Start(StartMessage {
        id: Bytes::from_static(&[7; 24]),
        debug_id: "inv_test".into(),
        known_entries: known,
        ..Default::default()
    }))
}

fn input(json: &str) -> Frame {
    Frame::new(&Message::InputCommand(InputCommandMessage {
        value: Some(value(json)),
        ..Default::default()
    }))
}

fn run_command(id: u32, name: &str) -> Frame {
    Frame::new(&Message::RunCommand(RunCommandMessage {
        result_completion_id: id,
        name: name.into(),
    }))
}

fn run_completion(id: u32, json: &str) -> Frame {
    use protocol::run_completion_notification_message::Result;
    Frame::new(&Message::RunCompletionNotification(
        RunCompletionNotificationMessage {
            completion_id: id,
            result: Some(Result::Value(value(json))),
        },
    ))
}

/// A greeter: step "stamp", a sleep, the answer. Counts its step's runs.
fn greeter(runs: &Arc<AtomicU32>) -> Endpoint {
    let runs = Arc::clone(runs);
    Endpoint::builder()
        .bind(Service::new("Greeter").handler(
            "greet",
            move |ctx: Context, Json(name): Json<String>| {
                let runs = Arc::clone(&runs);
                async move {
                    let Json(stamp): Json<String> = ctx
                        .run("stamp", move || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            Ok(Json("ok".to_owned()))
                        })
                        .await?;
                    ctx.sleep(Duration::from_millis(10)).await?;
                    HandlerResult::Ok(Json(format!("{name}:{stamp}")))
                }
            },
        ))
        .bind(
            Service::new("Busy").handler("later", |ctx: Context, ()| async move {
                ctx.run("call the busy service", || async {
                    Err::<Json<u32>, _>(taskwire_restate::HandlerError::retry_after(
                        "busy",
                        Duration::from_millis(1500),
                    ))
                })
                .await?;
                HandlerResult::Ok(())
            }),
        )
        .bind(VirtualObject::new("Counter").exclusive(
            "add",
            |ctx: ObjectContext, Json(delta): Json<i64>| async move {
                let count = ctx.get::<Json<i64>>("count").await?.map_or(0, |Json(n)| n) + delta;
                ctx.set("count", &Json(count))?;
                HandlerResult::Ok(Json(count))
            },
        ))
        .build()
        .unwrap()
}

fn types(frames: &[Frame]) -> Vec<MessageType> {
    frames.iter().map(|f| f.message_type).collect()
}

fn error_of(frames: &[Frame]) -> protocol::ErrorMessage {
    match frames.last().map(|f| f.decode(1 << 20)) {
        Some(Ok(Message::Error(error))) => error,
        other => panic!("expected an ErrorMessage last, got {other:?}"),
    }
}

#[tokio::test]
async fn a_complete_journal_replays_without_running_the_step_again() {
    let runs = Arc::new(AtomicU32::new(0));
    let journal = vec![
        start(5),
        input(r#""ada""#),
        run_command(1, "stamp"),
        run_completion(1, r#""ok""#),
        Frame::new(&Message::SleepCommand(SleepCommandMessage {
            wake_up_time: 1,
            result_completion_id: 2,
            name: String::new(),
        })),
        Frame::new(&Message::SleepCompletionNotification(
            SleepCompletionNotificationMessage {
                completion_id: 2,
                void: Some(protocol::Void {}),
            },
        )),
    ];
    let answer = invoke(&greeter(&runs), "Greeter", "greet", journal)
        .await
        .unwrap();
    assert_eq!(
        types(&answer),
        [MessageType::OutputCommand, MessageType::End]
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the stored step was not run again"
    );
    match answer[0].decode(1 << 20).unwrap() {
        Message::OutputCommand(output) => {
            let Some(protocol::output_command_message::Result::Value(v)) = output.result else {
                panic!()
            };
            assert_eq!(&v.content[..], br#""ada:ok""#);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_step_stored_without_its_result_runs_again_and_is_proposed() {
    let runs = Arc::new(AtomicU32::new(0));
    let journal = vec![start(2), input(r#""ada""#), run_command(1, "stamp")];
    let answer = invoke(&greeter(&runs), "Greeter", "greet", journal)
        .await
        .unwrap();
    assert_eq!(
        types(&answer),
        [MessageType::ProposeRunCompletion, MessageType::Suspension]
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_journal_the_code_does_not_make_is_a_journal_mismatch_naming_the_command() {
    let runs = Arc::new(AtomicU32::new(0));
    let journal = vec![start(2), input(r#""ada""#), run_command(1, "another name")];
    let answer = invoke(&greeter(&runs), "Greeter", "greet", journal)
        .await
        .unwrap();
    let error = error_of(&answer);
    assert_eq!(error.code, JOURNAL_MISMATCH);
    assert_eq!(error.related_command_index, Some(1));
    assert_eq!(
        error.related_command_type,
        Some(u32::from(MessageType::RunCommand.code()))
    );
    assert!(error.message.contains("run \"stamp\""), "{}", error.message);

    let other_type = vec![
        start(2),
        input(r#""ada""#),
        Frame::new(&Message::SleepCommand(SleepCommandMessage {
            wake_up_time: 1,
            result_completion_id: 1,
            name: String::new(),
        })),
    ];
    let answer = invoke(&greeter(&runs), "Greeter", "greet", other_type)
        .await
        .unwrap();
    let error = error_of(&answer);
    assert_eq!(error.code, JOURNAL_MISMATCH);
    assert!(
        error.message.contains("SleepCommandMessage"),
        "{}",
        error.message
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unreadable_input_is_a_protocol_violation() {
    let runs = Arc::new(AtomicU32::new(0));
    let endpoint = greeter(&runs);
    let no_start = invoke(&endpoint, "Greeter", "greet", vec![input(r#""x""#)])
        .await
        .unwrap();
    assert_eq!(error_of(&no_start).code, PROTOCOL_VIOLATION);

    let custom = Frame {
        message_type: MessageType::from_code(0xFC01),
        flags: 0,
        body: Bytes::new(),
    };
    let unknown = invoke(
        &endpoint,
        "Greeter",
        "greet",
        vec![start(2), input(r#""x""#), custom],
    )
    .await
    .unwrap();
    let error = error_of(&unknown);
    assert_eq!(error.code, PROTOCOL_VIOLATION);
    assert!(error.message.contains("0xfc01"), "{}", error.message);

    let short = invoke(
        &endpoint,
        "Greeter",
        "greet",
        vec![start(2), input(r#""x""#)],
    )
    .await
    .unwrap();
    assert_eq!(
        error_of(&short).code,
        PROTOCOL_VIOLATION,
        "fewer stored entries than Start announced"
    );

    let broken = Frame {
        message_type: MessageType::RunCommand,
        flags: 0,
        body: Bytes::from_static(&[0xff, 0xff]),
    };
    let answer = invoke(
        &endpoint,
        "Greeter",
        "greet",
        vec![start(2), input(r#""x""#), broken],
    )
    .await
    .unwrap();
    assert_eq!(error_of(&answer).code, PROTOCOL_VIOLATION);

    let bad_json = invoke(
        &endpoint,
        "Greeter",
        "greet",
        vec![start(1), input("not json")],
    )
    .await
    .unwrap();
    match bad_json[0].decode(1 << 20).unwrap() {
        Message::OutputCommand(output) => {
            let Some(protocol::output_command_message::Result::Failure(failure)) = output.result
            else {
                panic!()
            };
            assert_eq!(
                failure.code, 400,
                "bad input is a terminal failure: retrying cannot fix it"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cancellation_ends_the_awaits_with_409_and_the_invocation_with_it() {
    let runs = Arc::new(AtomicU32::new(0));
    let journal = vec![
        start(4),
        input(r#""ada""#),
        run_command(1, "stamp"),
        run_completion(1, r#""ok""#),
        Frame::new(&Message::SignalNotification(SignalNotificationMessage {
            signal_id: Some(protocol::signal_notification_message::SignalId::Idx(1)),
            result: Some(protocol::signal_notification_message::Result::Void(
                protocol::Void {},
            )),
        })),
    ];
    let answer = invoke(&greeter(&runs), "Greeter", "greet", journal)
        .await
        .unwrap();
    assert_eq!(
        types(&answer),
        [
            MessageType::SleepCommand,
            MessageType::OutputCommand,
            MessageType::End
        ]
    );
    match answer[1].decode(1 << 20).unwrap() {
        Message::OutputCommand(output) => {
            let Some(protocol::output_command_message::Result::Failure(failure)) = output.result
            else {
                panic!()
            };
            assert_eq!(failure.code, 409);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_suspension_names_what_the_handler_awaits_and_cancellation() {
    let runs = Arc::new(AtomicU32::new(0));
    let journal = vec![
        start(3),
        input(r#""ada""#),
        run_command(1, "stamp"),
        run_completion(1, r#""ok""#),
    ];
    let answer = invoke(&greeter(&runs), "Greeter", "greet", journal)
        .await
        .unwrap();
    assert_eq!(
        types(&answer),
        [MessageType::SleepCommand, MessageType::Suspension]
    );
    match answer[1].decode(1 << 20).unwrap() {
        Message::Suspension(s) => {
            assert_eq!(s.waiting_completions, [2]);
            assert_eq!(s.waiting_signals, [1]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn state_not_known_eagerly_is_read_lazily() {
    let runs = Arc::new(AtomicU32::new(0));
    let journal = vec![
        Frame::new(&Message::Start(StartMessage {
            known_entries: 1,
            key: "k".into(),
            partial_state: true,
            ..Default::default()
        })),
        input("3"),
    ];
    let answer = invoke(&greeter(&runs), "Counter", "add", journal)
        .await
        .unwrap();
    assert_eq!(
        types(&answer),
        [MessageType::GetLazyStateCommand, MessageType::Suspension]
    );

    let complete = vec![
        Frame::new(&Message::Start(StartMessage {
            known_entries: 1,
            key: "k".into(),
            partial_state: false,
            ..Default::default()
        })),
        input("3"),
    ];
    let answer = invoke(&greeter(&runs), "Counter", "add", complete)
        .await
        .unwrap();
    assert_eq!(
        types(&answer),
        [
            MessageType::GetEagerStateCommand,
            MessageType::SetStateCommand,
            MessageType::OutputCommand,
            MessageType::End
        ],
        "a complete state map answers at once: the key is absent"
    );
}

/// A frame of any type, valid or not.
fn any_frame() -> impl Strategy<Value = Frame> {
    let known: Vec<u16> = taskwire_restate::ALL_MESSAGE_TYPES
        .iter()
        .map(|t| t.code())
        .collect();
    (
        prop_oneof![prop::sample::select(known), any::<u16>()],
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(code, flags, body)| Frame {
            message_type: MessageType::from_code(code),
            flags,
            body: Bytes::from(body),
        })
}

/// A journal shaped like Restate's, with its entries drawn from what a greeter makes.
fn plausible_journal() -> impl Strategy<Value = Vec<Frame>> {
    let entry = prop_oneof![
        (1u32..4, prop_oneof![Just("stamp"), Just("x")])
            .prop_map(|(id, name)| run_command(id, name)),
        (1u32..4).prop_map(|id| run_completion(id, r#""ok""#)),
        (1u32..4).prop_map(|id| Frame::new(&Message::SleepCommand(SleepCommandMessage {
            wake_up_time: 1,
            result_completion_id: id,
            name: String::new()
        }))),
        (1u32..4).prop_map(|id| Frame::new(&Message::SleepCompletionNotification(
            SleepCompletionNotificationMessage {
                completion_id: id,
                void: None
            }
        ))),
        any_frame(),
    ];
    prop::collection::vec(entry, 0..6).prop_map(|entries| {
        let mut journal = vec![
            start(u32::try_from(entries.len()).unwrap_or(0) + 1),
            input(r#""p""#),
        ];
        journal.extend(entries);
        journal
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_journals_never_panic_and_end_with_exactly_one_terminator(journal in prop_oneof![plausible_journal(), prop::collection::vec(any_frame(), 0..8)]) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let runs = Arc::new(AtomicU32::new(0));
        let answer = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), invoke(&greeter(&runs), "Greeter", "greet", journal)).await
        });
        let answer = answer.expect("an attempt always ends").unwrap();
        let terminators: Vec<MessageType> = answer
            .iter()
            .map(|f| f.message_type)
            .filter(|t| matches!(t, MessageType::End | MessageType::Suspension | MessageType::Error))
            .collect();
        // An input that ends before a Start can be read gets no answer; otherwise exactly one.
        prop_assert!(terminators.len() <= 1, "{terminators:?}");
        if !answer.is_empty() {
            prop_assert_eq!(terminators.len(), 1);
            prop_assert!(matches!(answer.last().map(|f| f.message_type), Some(MessageType::End | MessageType::Suspension | MessageType::Error)));
        }
        prop_assert!(runs.load(Ordering::SeqCst) <= 1, "a step runs at most once an attempt");
    }
}

#[tokio::test]
async fn a_retryable_error_can_set_the_next_retry_delay() {
    let runs = Arc::new(AtomicU32::new(0));
    let answer = invoke(
        &greeter(&runs),
        "Busy",
        "later",
        vec![start(1), input("null")],
    )
    .await
    .unwrap();
    assert_eq!(
        types(&answer),
        [MessageType::RunCommand, MessageType::Error]
    );
    let error = error_of(&answer);
    assert_eq!((error.code, error.next_retry_delay), (500, Some(1500)));
    assert_eq!(
        error.related_command_name.as_deref(),
        Some("call the busy service")
    );
    assert_eq!(
        error.related_command_type,
        Some(u32::from(MessageType::RunCommand.code()))
    );
    assert!(error.message.contains("busy"), "{}", error.message);
}
