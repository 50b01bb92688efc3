//! One contract for `PaymentStore`, run against the memory store, a private
//! redis-server and a private 3-master Redis Cluster.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use payment_orchestrator::{
    domain::{
        money::{Amount, Currency},
        payment::{CaptureMode, Leg, NewPayment, Payment, PaymentToken},
        session::{Session, SessionStatus},
    },
    store::{
        Claim, ClaimRequest, IdempotencyScope, ListQuery, PaymentStore, StoreError,
        memory::MemoryStore,
        redis::{RedisSettings, RedisStore},
    },
};
use uuid::Uuid;

use super::redis_server::{RedisCluster, RedisServer};

/// A store under test, with whatever keeps it alive.
pub struct Subject {
    pub store: Arc<dyn PaymentStore>,
    _servers: Option<Box<dyn std::any::Any + Send>>,
}

pub fn memory() -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new()),
        _servers: None,
    }
}

pub fn redis_settings(urls: Vec<String>, cluster: bool) -> RedisSettings {
    RedisSettings {
        urls,
        cluster,
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        session_retention: Duration::from_secs(3600),
    }
}

pub async fn redis() -> Subject {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(vec![server.url()], false))
        .await
        .expect("connects");
    Subject {
        store: Arc::new(store),
        _servers: Some(Box::new(server)),
    }
}

pub async fn redis_cluster() -> Subject {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let store = RedisStore::connect(&redis_settings(cluster.urls(), true))
        .await
        .expect("connects");
    Subject {
        store: Arc::new(store),
        _servers: Some(Box::new(cluster)),
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn session(merchant: &str) -> Session {
    Session {
        id: Uuid::now_v7(),
        merchant: merchant.into(),
        order_reference: "order-1".into(),
        amount: Amount::from_minor(12000).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        capture_mode: CaptureMode::Manual,
        items: vec![],
        webhook: None,
        metadata: Default::default(),
        status: SessionStatus::Open,
        cancellation_reason: String::new(),
        created_at: t0(),
        updated_at: t0(),
        expires_at: t0() + Duration::from_secs(1800),
        payment_id: None,
    }
}

fn payment(merchant: &str, order_reference: &str, created_at: SystemTime) -> Payment {
    let mut ids = Uuid::now_v7;
    Payment::new(
        NewPayment {
            id: Uuid::now_v7(),
            merchant: merchant.into(),
            session_id: Uuid::now_v7(),
            order_reference: order_reference.into(),
            amount: Amount::from_minor(12000).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            capture_mode: CaptureMode::Manual,
            legs: vec![Leg {
                partner: "ingenico".into(),
                method: "creditcard".into(),
                amount: Amount::from_minor(12000).unwrap(),
                token: PaymentToken::new("tok".into()),
            }],
            webhook: None,
            authorization_id: Uuid::now_v7(),
            idempotency_key: None,
        },
        &mut ids,
        created_at,
    )
}

fn scope(key: &str) -> IdempotencyScope {
    IdempotencyScope {
        merchant: "demo".into(),
        resource: format!("payment:{}", Uuid::now_v7()),
        key: key.into(),
    }
}

fn claim_request(fingerprint: &str, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        fingerprint: fingerprint.into(),
        reserved_id: Uuid::now_v7(),
        lease,
        ttl: Duration::from_secs(3600),
    }
}

pub async fn sessions_are_written_with_compare_and_set(subject: Subject) {
    let store = subject.store;
    let mut s = session("demo");
    store.insert_session(&s).await.unwrap();
    assert!(matches!(
        store.insert_session(&s).await,
        Err(StoreError::AlreadyExists)
    ));
    let read = store.session(s.id).await.unwrap().unwrap();
    assert_eq!((read.value.clone(), read.version), (s.clone(), 1));
    s.status = SessionStatus::Cancelled;
    assert_eq!(store.update_session(&s, 1).await.unwrap(), 2);
    assert!(matches!(
        store.update_session(&s, 1).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.session(s.id).await.unwrap().unwrap().value.status,
        SessionStatus::Cancelled
    );
    assert!(store.session(Uuid::now_v7()).await.unwrap().is_none());
}

pub async fn payments_are_written_with_compare_and_set(subject: Subject) {
    let store = subject.store;
    let mut p = payment("demo", "order-1", t0());
    store.insert_payment(&p).await.unwrap();
    assert!(matches!(
        store.insert_payment(&p).await,
        Err(StoreError::AlreadyExists)
    ));
    p.order_reference = "changed".into();
    assert_eq!(store.update_payment(&p, 1).await.unwrap(), 2);
    assert!(matches!(
        store.update_payment(&p, 1).await,
        Err(StoreError::Conflict)
    ));
    let unknown = payment("demo", "x", t0());
    assert!(matches!(
        store.update_payment(&unknown, 1).await,
        Err(StoreError::Conflict)
    ));
    let read = store.payment(p.id).await.unwrap().unwrap();
    assert_eq!((read.value, read.version), (p.clone(), 2));

    store
        .index_operation(p.authorization().id, p.id)
        .await
        .unwrap();
    assert_eq!(
        store
            .payment_of_operation(p.authorization().id)
            .await
            .unwrap(),
        Some(p.id)
    );
    assert_eq!(
        store.payment_of_operation(Uuid::now_v7()).await.unwrap(),
        None
    );
}

pub async fn only_one_concurrent_writer_wins_each_version(subject: Subject) {
    let store = subject.store;
    let p = payment("demo", "order-1", t0());
    store.insert_payment(&p).await.unwrap();
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let mut p = p.clone();
            tokio::spawn(async move {
                p.order_reference = format!("writer-{i}");
                store.update_payment(&p, 1).await
            })
        })
        .collect();
    let mut won = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(2) => won += 1,
            Err(StoreError::Conflict) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
}

pub async fn idempotency_claims_follow_the_contract(subject: Subject) {
    let store = subject.store;
    let scope = scope("key-1");
    let first = claim_request("fp-1", Duration::from_secs(10));
    assert_eq!(
        store.claim(&scope, &first, t0()).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        store
            .claim(
                &scope,
                &claim_request("fp-1", Duration::from_secs(10)),
                t0()
            )
            .await
            .unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        store
            .claim(
                &scope,
                &claim_request("fp-2", Duration::from_secs(10)),
                t0()
            )
            .await
            .unwrap(),
        Claim::Mismatch
    );
    // The lease ran out: a retry takes over with the first reserved id.
    let later = t0() + Duration::from_secs(11);
    assert_eq!(
        store
            .claim(
                &scope,
                &claim_request("fp-1", Duration::from_secs(10)),
                later
            )
            .await
            .unwrap(),
        Claim::TakenOver {
            reserved_id: first.reserved_id
        }
    );
    assert_eq!(
        store
            .claim(
                &scope,
                &claim_request("fp-1", Duration::from_secs(10)),
                later
            )
            .await
            .unwrap(),
        Claim::InFlight
    );
    store
        .complete(&scope, b"outcome \x00\xff bytes", later)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim(
                &scope,
                &claim_request("fp-1", Duration::from_secs(10)),
                later
            )
            .await
            .unwrap(),
        Claim::Done(b"outcome \x00\xff bytes".to_vec())
    );
    assert_eq!(
        store
            .claim(
                &scope,
                &claim_request("fp-2", Duration::from_secs(10)),
                later
            )
            .await
            .unwrap(),
        Claim::Mismatch
    );

    let released = self::scope("key-2");
    assert_eq!(
        store
            .claim(
                &released,
                &claim_request("fp-1", Duration::from_secs(10)),
                t0()
            )
            .await
            .unwrap(),
        Claim::Acquired
    );
    store.release(&released).await.unwrap();
    assert_eq!(
        store
            .claim(
                &released,
                &claim_request("fp-2", Duration::from_secs(10)),
                t0()
            )
            .await
            .unwrap(),
        Claim::Acquired
    );
}

pub async fn idempotency_keys_expire_after_their_ttl(subject: Subject) {
    let store = subject.store;
    let scope = scope("short-lived");
    let mut request = claim_request("fp-1", Duration::from_secs(10));
    request.ttl = Duration::from_millis(100);
    assert_eq!(
        store.claim(&scope, &request, t0()).await.unwrap(),
        Claim::Acquired
    );
    store.complete(&scope, b"done", t0()).await.unwrap();
    // Redis expires by its own clock, the memory store by the time given.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let later = t0() + Duration::from_millis(250);
    assert_eq!(
        store
            .claim(
                &scope,
                &claim_request("fp-2", Duration::from_secs(10)),
                later
            )
            .await
            .unwrap(),
        Claim::Acquired
    );
}

pub async fn exactly_one_concurrent_claim_is_acquired(subject: Subject) {
    let store = subject.store;
    let scope = scope("raced");
    let claims: Vec<_> = (0..50)
        .map(|_| {
            let (store, scope) = (store.clone(), scope.clone());
            tokio::spawn(async move {
                store
                    .claim(&scope, &claim_request("fp", Duration::from_secs(10)), t0())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut acquired = 0;
    for claim in claims {
        match claim.await.unwrap() {
            Claim::Acquired => acquired += 1,
            Claim::InFlight => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acquired, 1);
}

pub async fn listing_is_ordered_bounded_and_paged(subject: Subject) {
    let store = subject.store;
    let merchant = format!("m-{}", Uuid::now_v7());
    let created: Vec<Payment> = (0..7)
        .map(|i| {
            payment(
                &merchant,
                if i % 2 == 0 { "even" } else { "odd" },
                t0() + Duration::from_secs(i),
            )
        })
        .collect();
    // Inserted out of order: the index orders by creation time.
    for p in created.iter().rev() {
        store.insert_payment(p).await.unwrap();
    }
    store
        .insert_payment(&payment("someone-else", "even", t0()))
        .await
        .unwrap();
    let ids = |listed: Vec<payment_orchestrator::store::ListedPayment>| -> Vec<Uuid> {
        listed.into_iter().map(|l| l.payment.unwrap().id).collect()
    };
    let query = ListQuery {
        merchant: merchant.clone(),
        order_reference: None,
        created_after: None,
        created_before: None,
        cursor: None,
        newest_first: false,
        limit: 100,
    };
    let all: Vec<Uuid> = created.iter().map(|p| p.id).collect();
    assert_eq!(ids(store.list_payments(&query).await.unwrap()), all);

    let newest = ListQuery {
        newest_first: true,
        ..query.clone()
    };
    assert_eq!(
        ids(store.list_payments(&newest).await.unwrap()),
        all.iter().rev().copied().collect::<Vec<_>>()
    );

    let bounded = ListQuery {
        created_after: Some(t0() + Duration::from_secs(2)),
        created_before: Some(t0() + Duration::from_secs(5)),
        ..query.clone()
    };
    assert_eq!(
        ids(store.list_payments(&bounded).await.unwrap()),
        all[2..5].to_vec()
    );

    let first_page = store
        .list_payments(&ListQuery {
            limit: 3,
            ..query.clone()
        })
        .await
        .unwrap();
    let cursor = first_page.last().unwrap().cursor.clone();
    let second_page = store
        .list_payments(&ListQuery {
            limit: 3,
            cursor: Some(cursor),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(first_page), all[0..3].to_vec());
    assert_eq!(ids(second_page), all[3..6].to_vec());

    let odd = ListQuery {
        order_reference: Some("odd".into()),
        newest_first: true,
        ..query.clone()
    };
    assert_eq!(
        ids(store.list_payments(&odd).await.unwrap()),
        vec![all[5], all[3], all[1]]
    );
}

macro_rules! contract {
    ($subject:ident: $($name:ident),* $(,)?) => {
        mod $subject {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::$subject().await).await;
                }
            )*
        }
    };
}

macro_rules! contract_suite {
    ($($subject:ident),*) => {
        $(
            contract!($subject:
                sessions_are_written_with_compare_and_set,
                payments_are_written_with_compare_and_set,
                only_one_concurrent_writer_wins_each_version,
                idempotency_claims_follow_the_contract,
                idempotency_keys_expire_after_their_ttl,
                exactly_one_concurrent_claim_is_acquired,
                listing_is_ordered_bounded_and_paged,
            );
        )*
    };
}

async fn in_memory() -> Subject {
    memory()
}

async fn single_redis() -> Subject {
    redis().await
}

async fn clustered_redis() -> Subject {
    redis_cluster().await
}

contract_suite!(in_memory, single_redis, clustered_redis);
