//! Faults at the application level: a response lost after the server applied a request.

use std::time::Duration;

use bytes::Bytes;
use taskwire_proto::instance::v1::{
    CheckpointRequest, GetCheckpointRequest, RegisterInstanceRequest,
};
use taskwire_quic::Limits;
use taskwire_quic::relay::{Relay, RelayConfig};
use taskwire_reliability::fixture::{Pki, reference};

async fn within<T>(seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .expect("test step timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_retried_after_a_lost_response_is_applied_exactly_once() {
    let pki = Pki::generate();
    let reference = reference();
    let server = pki.serve(&reference, Limits::default());
    // Through a relay that delays every datagram 100 ms, so the answer is still on its way
    // when the server has stored the checkpoint.
    let relay = Relay::start(
        server.local_addr(),
        RelayConfig {
            delay: Duration::from_millis(100),
            ..RelayConfig::default()
        },
    )
    .await
    .unwrap();
    let first = pki.client(relay.local_addr(), Limits::default());
    let connection = within(10, first.connect()).await.unwrap();
    connection
        .call(RegisterInstanceRequest {
            instance_id: "order-7".into(),
            image_id: "img".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let request = CheckpointRequest {
        instance_id: "order-7".into(),
        checkpoint_id: "after-payment".into(),
        sequence: 1,
        state: Bytes::from_static(b"paid"),
    };
    // The call is abandoned, and its connection closed, the moment the server has stored
    // the checkpoint: the worker never sees the answer.
    let call = connection.call(request.clone());
    let stored = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        while reference.sizes().checkpoints == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        biased;
        () = stored => {}
        answered = call => panic!("the answer arrived before the store was seen: {answered:?}"),
    }
    connection.close();
    first.close().await;

    // The worker restarts, reconnects and retries.
    let retry = pki.client(server.local_addr(), Limits::default());
    let connection = within(10, retry.connect()).await.unwrap();
    let answer = within(10, connection.call(request)).await.unwrap();
    assert!(
        answer.duplicate,
        "the retry is recognised as the same checkpoint"
    );
    assert_eq!(reference.sizes().checkpoints, 1, "applied exactly once");
    let stored = connection
        .call(GetCheckpointRequest {
            instance_id: "order-7".into(),
            checkpoint_id: "after-payment".into(),
        })
        .await
        .unwrap()
        .checkpoint
        .unwrap();
    assert_eq!(stored.state, Bytes::from_static(b"paid"));
}
