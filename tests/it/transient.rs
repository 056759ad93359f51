//! End-to-end: transient room data and sd: session data.

use std::time::Duration;

use hpb_test_support::barrier::{connect_user, sync};
use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, HelloInfo, Hpb, Room, TestClient, default_permissions,
    free_config,
};
use serde_json::{Value, json};

fn transient(body: Value) -> Value {
    json!({"type": "transient", "transient": body})
}

/// room1: alice and bob may write transient data, carol may not.
async fn setup() -> (FakeNextcloud, Hpb) {
    let nc = FakeNextcloud::start().await;
    let mut writers = default_permissions();
    writers.push("transient-data".into());
    let writers: Vec<&str> = writers.iter().map(String::as_str).collect();
    let readers = default_permissions();
    let readers: Vec<&str> = readers.iter().map(String::as_str).collect();
    nc.add_room(
        Room::public("room1")
            .with_permissions(&writers)
            .with_user_permissions("carol", &readers),
    );
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    (nc, hpb)
}

async fn joined(
    hpb: &Hpb,
    nc: &FakeNextcloud,
    user: &str,
    others: &mut [&mut TestClient],
) -> (TestClient, HelloInfo) {
    let (mut c, h) = connect_user(hpb, nc, user).await;
    c.join("room1", format!("{user}-talk").as_str()).await;
    sync(&mut c).await;
    for o in others.iter_mut() {
        sync(o).await;
    }
    (c, h)
}

#[tokio::test]
async fn set_and_remove_reach_every_member_including_the_sender() {
    let (nc, hpb) = setup().await;
    let (mut alice, _) = joined(&hpb, &nc, "alice", &mut []).await;
    let (mut bob, _) = joined(&hpb, &nc, "bob", &mut [&mut alice]).await;
    let (mut carol, _) = joined(&hpb, &nc, "carol", &mut [&mut alice, &mut bob]).await;

    alice.transient_set("k", json!({"a": 1})).await;
    let first = transient(json!({"type": "set", "key": "k", "value": {"a": 1}}));
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(sync(c).await, vec![first.clone()]);
    }
    bob.transient_set("k", json!([2, "two"])).await;
    let second =
        transient(json!({"type": "set", "key": "k", "value": [2, "two"], "oldvalue": {"a": 1}}));
    for c in [&mut bob, &mut alice, &mut carol] {
        assert_eq!(sync(c).await, vec![second.clone()]);
    }
    alice.transient_remove("k").await;
    let removed = transient(json!({"type": "remove", "key": "k", "oldvalue": [2, "two"]}));
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(sync(c).await, vec![removed.clone()]);
    }
    // Removing a missing key changes nothing.
    alice.transient_remove("k").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert!(sync(c).await.is_empty());
    }
}

#[tokio::test]
async fn a_joining_session_gets_the_current_data_first() {
    let (nc, hpb) = setup().await;
    let (mut alice, _) = joined(&hpb, &nc, "alice", &mut []).await;
    alice.transient_set("a", json!(1)).await;
    alice.transient_set("b", json!("x")).await;
    sync(&mut alice).await;

    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    bob.join("room1", "bob-talk").await;
    let first = bob
        .recv(DEFAULT_TIMEOUT)
        .await
        .expect("a frame after the join");
    assert_eq!(
        first,
        transient(json!({"type": "initial", "data": {"a": 1, "b": "x"}}))
    );
}

#[tokio::test]
async fn transient_data_needs_a_room_and_the_permission() {
    let (nc, hpb) = setup().await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    let id = alice.transient_set("k", json!(1)).await;
    let err = alice.expect_error("not_in_room").await;
    assert_eq!(err["id"], id.as_str());

    let (mut bob, _) = joined(&hpb, &nc, "bob", &mut []).await;
    let (mut carol, _) = joined(&hpb, &nc, "carol", &mut [&mut bob]).await;
    let id = carol.transient_set("k", json!(1)).await;
    let err = carol.expect_error("not_allowed").await;
    assert_eq!(err["id"], id.as_str());
    let id = carol.transient_remove("k").await;
    assert_eq!(carol.expect_error("not_allowed").await["id"], id.as_str());
    assert!(sync(&mut bob).await.is_empty());
}

#[tokio::test]
async fn session_data_is_written_by_its_session_only_and_removed_when_it_leaves() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = joined(&hpb, &nc, "alice", &mut []).await;
    let (mut bob, b) = joined(&hpb, &nc, "bob", &mut [&mut alice]).await;
    let own = format!("sd:{}", a.sessionid);
    alice.transient_set(&own, json!({"audio": true})).await;
    let set = transient(json!({"type": "set", "key": own, "value": {"audio": true}}));
    assert_eq!(sync(&mut alice).await, vec![set.clone()]);
    assert_eq!(sync(&mut bob).await, vec![set]);

    let id = bob.transient_set(&own, json!({"audio": false})).await;
    assert_eq!(bob.expect_error("not_allowed").await["id"], id.as_str());
    let id = bob.transient_remove(&own).await;
    assert_eq!(bob.expect_error("not_allowed").await["id"], id.as_str());
    let id = alice
        .transient_set(&format!("sd:{}", b.sessionid), json!(1))
        .await;
    assert_eq!(alice.expect_error("not_allowed").await["id"], id.as_str());
    assert!(sync(&mut alice).await.is_empty());

    alice.leave().await;
    let got = sync(&mut bob).await;
    assert!(
        got.contains(&transient(
            json!({"type": "remove", "key": own, "oldvalue": {"audio": true}})
        )),
        "{got:?}"
    );
}

#[tokio::test]
async fn null_removes_and_an_identical_value_sends_nothing() {
    let (nc, hpb) = setup().await;
    let (mut alice, _) = joined(&hpb, &nc, "alice", &mut []).await;
    let (mut bob, _) = joined(&hpb, &nc, "bob", &mut [&mut alice]).await;
    alice.transient_set("k", json!({"v": 1})).await;
    sync(&mut alice).await;
    sync(&mut bob).await;
    bob.transient_set("k", json!({"v": 1})).await;
    assert!(sync(&mut bob).await.is_empty());
    assert!(sync(&mut alice).await.is_empty());
    bob.transient_set("k", Value::Null).await;
    let removed = transient(json!({"type": "remove", "key": "k", "oldvalue": {"v": 1}}));
    assert_eq!(sync(&mut bob).await, vec![removed.clone()]);
    assert_eq!(sync(&mut alice).await, vec![removed]);
}

#[tokio::test]
async fn unknown_types_are_ignored_and_a_missing_key_is_invalid() {
    let (nc, hpb) = setup().await;
    let (mut alice, _) = joined(&hpb, &nc, "alice", &mut []).await;
    let id = alice
        .send_with_id(json!({"type": "transient", "transient": {"type": "frobnicate", "key": "k"}}))
        .await;
    assert_eq!(alice.expect_error("ignored").await["id"], id.as_str());
    let id = alice
        .send_with_id(json!({"type": "transient", "transient": {"type": "set", "value": 1}}))
        .await;
    assert_eq!(
        alice.expect_error("invalid_format").await["id"],
        id.as_str()
    );
    let id = alice
        .send_with_id(json!({"type": "transient", "transient": {"type": "remove"}}))
        .await;
    assert_eq!(
        alice.expect_error("invalid_format").await["id"],
        id.as_str()
    );
    assert!(sync(&mut alice).await.is_empty());
}

#[tokio::test]
async fn values_with_a_ttl_expire_with_a_remove_event() {
    let (nc, hpb) = setup().await;
    let (mut alice, _) = joined(&hpb, &nc, "alice", &mut []).await;
    let (mut bob, _) = joined(&hpb, &nc, "bob", &mut [&mut alice]).await;
    // 500 ms in nanoseconds.
    alice
        .send_with_id(json!({"type": "transient", "transient": {
            "type": "set", "key": "short", "value": "soon gone", "ttl": 500_000_000u64}}))
        .await;
    alice.transient_set("long", json!("stays")).await;
    let sets = vec![
        transient(json!({"type": "set", "key": "short", "value": "soon gone"})),
        transient(json!({"type": "set", "key": "long", "value": "stays"})),
    ];
    let removed = transient(json!({"type": "remove", "key": "short", "oldvalue": "soon gone"}));
    for c in [&mut alice, &mut bob] {
        // The expiry may already have happened; it comes after the two sets either way.
        let mut got = sync(c).await;
        if got.len() == 2 {
            let expiry = c
                .wait_for(|f| f["type"] == "transient", Duration::from_secs(10))
                .await
                .expect("the value expires");
            got.push(expiry);
        }
        let mut want = sets.clone();
        want.push(removed.clone());
        assert_eq!(got, want);
    }
    // Only the value with a TTL went away.
    let (mut carol, _) = connect_user(&hpb, &nc, "carol").await;
    carol.join("room1", "carol-talk").await;
    assert_eq!(
        carol.recv(DEFAULT_TIMEOUT).await.expect("initial data"),
        transient(json!({"type": "initial", "data": {"long": "stays"}}))
    );
}

#[tokio::test]
async fn data_is_dropped_when_the_room_empties() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = joined(&hpb, &nc, "alice", &mut []).await;
    alice.transient_set("k", json!(1)).await;
    sync(&mut alice).await;
    alice.leave().await;
    alice.join("room1", "alice-talk").await;
    let first = alice.recv(DEFAULT_TIMEOUT).await.expect("own join event");
    assert_eq!(
        first["type"], "event",
        "no initial data after the room emptied: {first}"
    );
    assert_eq!(first["event"]["join"][0]["sessionid"], a.sessionid.as_str());
}
