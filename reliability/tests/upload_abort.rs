//! A client killed in the middle of an image upload: the server drops the partial upload
//! and the heap returns to its baseline. Measured with dhat's counting allocator (one test
//! per process).

use std::time::Duration;

use bytes::Bytes;
use taskwire_proto::environment::v1::ImageUpload;
use taskwire_proto::environment::v1::image_upload::{ImageManifest, Part};
use taskwire_quic::Limits;
use taskwire_reliability::fixture::{Pki, reference};
use taskwire_rpc::CallOptions;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const DECLARED: u64 = 32 << 20;
const SENT: usize = 8 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_upload_leaves_nothing_behind() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let pki = Pki::generate();
    let reference = reference();
    let server = pki.serve(&reference, Limits::default());
    let client = pki.client(server.local_addr(), Limits::default());
    let connection = client.connect().await.unwrap();
    // Warm up once, so the baseline includes what a connection keeps after its first call.
    connection
        .call(taskwire_proto::management::v1::HealthRequest {})
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = dhat::HeapStats::get().curr_bytes;

    let manifest = ImageUpload {
        part: Some(Part::Manifest(ImageManifest {
            name: "big".into(),
            size_bytes: DECLARED,
            sha256: Bytes::from_static(&[0; 32]),
            ..Default::default()
        })),
    };
    let mut upload = connection
        .client_stream(manifest, CallOptions::default())
        .await
        .unwrap();
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    for _ in 0..SENT / chunk.len() {
        upload
            .send(ImageUpload {
                part: Some(Part::Chunk(chunk.clone())),
            })
            .await
            .unwrap();
    }
    // The server holds what arrived.
    let holding = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = dhat::HeapStats::get().curr_bytes;
            if now > baseline + SENT / 2 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the upload reached the server");

    // Killed: the upload is dropped unfinished and the connection closed without a word.
    drop(upload);
    connection.close();
    client.close().await;
    let settled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = dhat::HeapStats::get().curr_bytes;
            if now <= baseline + 256 * 1024 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let now = dhat::HeapStats::get().curr_bytes;
    assert!(
        settled.is_ok(),
        "the heap stayed at {now} bytes after the kill; baseline {baseline}, {holding} while uploading"
    );
    assert_eq!(
        reference.sizes().images,
        0,
        "the partial upload was not stored"
    );
    drop(server);
}
