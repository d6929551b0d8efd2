//! Hot reload: a bad config never replaces a good one; a good one applies to the next
//! request without touching open streams.

use std::time::Duration;

use apigate_fake_apiserver::REPLICA_HEADER;

use crate::support::{config, eventually, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_rejected_and_the_last_good_one_keeps_serving() {
    let h = Harness::start(2).await;
    let client = h.h2(None).await;
    assert_eq!(client.get("/version", &[]).await.unwrap().status, 200);
    let good = std::fs::read_to_string(h.config_path()).unwrap();
    std::fs::write(
        h.config_path(),
        good.replace("static: [", "static: [\"not-an-address\", "),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || h
            .metric("apigate_config_reloads_total{result=\"failure\"}")
            >= 1.0)
        .await,
        "the bad config was seen and rejected"
    );
    assert_eq!(
        h.metric("apigate_config_errors_total{problem=\"invalid\"}"),
        1.0
    );
    assert_eq!(h.metric("apigate_config_revision"), 1.0);
    let counts = client
        .spread("/version", &[], REPLICA_HEADER, 20, 2)
        .await
        .unwrap();
    assert_eq!(
        counts.values().sum::<usize>(),
        20,
        "still served: {counts:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_backends_apply_to_the_next_request_and_open_watches_survive() {
    let h = Harness::start(2).await;
    let client = h.h2(None).await;
    let mut watch = client
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();
    let first = watch.next_chunk(Duration::from_secs(5)).await.unwrap();
    assert!(first.contains("\"type\""), "{first}");

    // Swap to only the second replica.
    let only_second = config(&[h.replicas[1].local_addr()], &h.settings);
    std::fs::write(h.config_path(), only_second).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || h
            .metric("apigate_config_revision")
            >= 2.0)
        .await,
        "the new config was activated"
    );
    let counts = client
        .spread("/version", &[], REPLICA_HEADER, 20, 2)
        .await
        .unwrap();
    assert_eq!(counts.get("replica-1"), Some(&20), "{counts:?}");
    // The watch opened before the swap still delivers events.
    for _ in 0..3 {
        let chunk = watch.next_chunk(Duration::from_secs(5)).await.unwrap();
        assert!(chunk.contains("\"type\""), "{chunk}");
    }
    h.stop().await;
}
